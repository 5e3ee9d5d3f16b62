"""How every Argus service starts, reports health, and stops.

`main()` is what `python -m argus_<name>` and the console script call: it reads and validates the configuration
from the environment (exit code 2 with a message naming the bad variable), sets up JSON logging, and runs the
service's `async def run(config) -> int` under asyncio.

Inside `run`, a service opens a `Runtime`: it serves `/healthz`, `/readyz` and Prometheus `/metrics` (and any
routes the service adds), owns the bus, database pool and object store it opens, and turns SIGTERM into a staged
shutdown, each stage within its share of `ARGUS_SHUTDOWN_BUDGET_S`:

1. STOP_INTAKE: readiness goes false, `stopping` is set, intake callbacks run (unsubscribe, stop accepting);
2. FINISH_INFLIGHT: the service's main coroutine gets to return on its own (a recorder closes and uploads its open
   segment), then in-flight callbacks run; what is still running when the budget is spent is logged and cancelled;
3. DRAIN_BUS: NATS is drained (published messages flushed, subscriptions emptied);
4. CLOSE: pools and clients are closed, then the HTTP server.

The process exits 0 when every stage finished inside its budget, 1 otherwise (or when the main coroutine failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Annotated, Any, Literal, Self, TypeVar

import asyncpg
import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from argus_core import db as dbmod
from argus_core.bus import Bus, Topology, TopologyOptions, topology
from argus_core.config import load_config, unknown_variables
from argus_core.errors import ConfigError
from argus_core.http import problem_middleware
from argus_core.logs import setup_logging
from argus_core.storage import ObjectStore, S3Config

log = logging.getLogger(__name__)

C = TypeVar("C", bound="RuntimeConfig")

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every service has (`ARGUS_HTTP_PORT`, `ARGUS_NATS_URL`, ...); services subclass it."""

    pod_name: str = msgspec.field(default_factory=socket.gethostname)
    http_host: str = "0.0.0.0"
    http_port: Port = 8080
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    shutdown_budget_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 25.0
    nats_url: str = "nats://127.0.0.1:4222"
    nats_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    media_max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    lease_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 6.0

    def topology_options(self) -> TopologyOptions:
        return TopologyOptions(
            replicas=self.nats_replicas, media_max_age_s=self.media_max_age_s, lease_ttl_s=self.lease_ttl_s
        )


class Stage(enum.IntEnum):
    STOP_INTAKE = 1
    FINISH_INFLIGHT = 2
    DRAIN_BUS = 3
    CLOSE = 4


# Share of the shutdown budget each stage may use.
_STAGE_SHARE = {Stage.STOP_INTAKE: 0.1, Stage.FINISH_INFLIGHT: 0.6, Stage.DRAIN_BUS: 0.2, Stage.CLOSE: 0.1}

StopCallback = Callable[[], Awaitable[None]]
Check = Callable[[], bool]

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("argus.runtime")


class Runtime:
    """One service process's lifecycle, health endpoints, metrics and owned clients."""

    def __init__(self, name: str, config: RuntimeConfig, *, app: web.Application | None = None) -> None:
        self.name = name
        self.config = config
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._up = Gauge("argus_service_ready", "1 while the service is ready", registry=self.registry)
        self.app = app if app is not None else web.Application(middlewares=[problem_middleware])
        self.app[RUNTIME_KEY] = self
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.stopping = asyncio.Event()
        self._ready = False
        self._checks: dict[str, Check] = {}
        self._stops: dict[Stage, list[tuple[str, StopCallback]]] = {stage: [] for stage in Stage}
        self._runner: web.AppRunner | None = None
        self._signals_installed: list[signal.Signals] = []
        self._main: asyncio.Task[Any] | None = None
        self._clean = True
        self.http_port = 0
        self.bus: Bus | None = None

    # --- health ------------------------------------------------------------------------------------------------

    def set_ready(self, ready: bool = True) -> None:
        self._ready = ready and not self.stopping.is_set()
        self._up.set(1 if self._ready else 0)

    def add_check(self, name: str, check: Check) -> None:
        """A readiness condition, evaluated at each /readyz."""
        self._checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        results = {name: bool(check()) for name, check in self._checks.items()}
        results["started"] = self._ready
        return all(results.values()), results

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.name, "stopping": self.stopping.is_set()})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, checks = self.readiness()
        return web.json_response({"ready": ready, "service": self.name, "checks": checks}, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- owned clients -----------------------------------------------------------------------------------------

    def on_stop(self, stage: Stage, name: str, callback: StopCallback) -> None:
        """Run `callback` during `stage` of shutdown (callbacks of a stage run in registration order)."""
        self._stops[stage].append((name, callback))

    async def connect_bus(self, topo: Topology | None = None) -> Bus:
        bus = await Bus.connect(self.config.nats_url, name=f"{self.name}@{self.config.pod_name}")
        self.on_stop(Stage.DRAIN_BUS, "nats", bus.drain)
        self.add_check("nats", lambda: bus.connected)
        await bus.ensure(topo if topo is not None else topology(self.config.topology_options()))
        self.bus = bus
        return bus

    async def open_db(self, config: dbmod.DatabaseConfig, *, migrate: bool = True) -> asyncpg.Pool:
        pool = await dbmod.create_pool(config)
        self.on_stop(Stage.CLOSE, "postgres", pool.close)
        if migrate:
            await dbmod.migrate(pool)
        return pool

    async def open_store(self, config: S3Config, *, bootstrap: bool = True) -> ObjectStore:
        store = ObjectStore(config)
        self.on_stop(Stage.CLOSE, "s3", store.close)
        if bootstrap:
            await store.ensure_buckets()
        return store

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._signals_installed.append(sig)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http_port
        log.info(
            "%s serving health on %s:%d",
            self.name,
            self.config.http_host,
            self.http_port,
            extra={"port": self.http_port},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
        await self._shutdown()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping.is_set():
            log.warning("second %s: cancelling in-flight work now", sig.name)
            if self._main is not None:
                self._main.cancel()
            return
        log.info("%s received: stopping", sig.name)
        self.stop()

    def stop(self) -> None:
        self.set_ready(False)
        self.stopping.set()

    async def serve(self, main: Coroutine[Any, Any, object]) -> int:
        """Run the service's main coroutine until it returns or a stop is asked, then shut down in stages."""
        self._main = asyncio.create_task(main, name=f"{self.name}.main")
        stop_wait = asyncio.create_task(self.stopping.wait(), name=f"{self.name}.stop-wait")
        try:
            await asyncio.wait({self._main, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_wait
        failed = False
        if self._main.done() and not self.stopping.is_set():
            exc = None if self._main.cancelled() else self._main.exception()
            if exc is not None:
                log.error("%s main task failed", self.name, exc_info=exc)
                failed = True
            else:
                log.info("%s main task finished", self.name)
        self.stop()
        await self._shutdown()
        return 1 if failed or not self._clean else 0

    async def _shutdown(self) -> None:
        if self._runner is None:
            return
        budget = self.config.shutdown_budget_s
        started = time.monotonic()
        for stage in Stage:
            share = budget * _STAGE_SHARE[stage]
            remaining = max(0.0, budget - (time.monotonic() - started))
            await self._run_stage(stage, min(share, remaining) if stage != Stage.CLOSE else max(share, remaining))
        for sig in self._signals_installed:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(sig)
        self._signals_installed.clear()
        runner, self._runner = self._runner, None
        await runner.cleanup()
        log.info(
            "%s stopped in %.2f s%s",
            self.name,
            time.monotonic() - started,
            "" if self._clean else " (a stage ran over its budget)",
        )

    async def _run_stage(self, stage: Stage, budget: float) -> None:
        log.debug("shutdown stage %s (budget %.1f s)", stage.name, budget)
        try:
            async with asyncio.timeout(budget):
                if stage == Stage.FINISH_INFLIGHT and self._main is not None and not self._main.done():
                    await asyncio.wait({self._main})
                for name, callback in self._stops[stage]:
                    try:
                        await callback()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("shutdown step %s/%s failed", stage.name, name)
                        self._clean = False
        except TimeoutError:
            self._clean = False
            pending = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
            log.error(  # noqa: TRY400 - the timeout is the news; its traceback is not
                "shutdown stage %s ran over its %.1f s budget; still running: %s",
                stage.name,
                budget,
                ", ".join(sorted(pending)) or "nothing",
            )
        if stage == Stage.FINISH_INFLIGHT and self._main is not None and not self._main.done():
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if stage == Stage.FINISH_INFLIGHT and self._main is not None and self._main.done():
            if not self._main.cancelled() and self._main.exception() is not None:
                log.error("%s main task failed while stopping", self.name, exc_info=self._main.exception())
                self._clean = False


def main(
    name: str,
    config_type: type[C],
    run: Callable[[C], Awaitable[int]],
    environ: Mapping[str, str] | None = None,
) -> int:
    """The body of every service's `__main__`: config, logging, then `run(config)` under asyncio."""
    env = os.environ if environ is None else environ
    try:
        config = load_config(config_type, env)
    except ConfigError as exc:
        setup_logging(name, "info", "json" if env.get("ARGUS_LOG_FORMAT", "json") == "json" else "text")
        log.error(  # noqa: TRY400 - an operator's mistake, not a bug: no traceback
            "invalid configuration: %s",
            exc,
            extra={"variable": exc.variable, "problem": exc.problem},
        )
        return 2
    setup_logging(name, config.log_level, config.log_format)
    for variable in unknown_variables(config_type, env):
        log.warning("unknown setting %s is ignored", variable, extra={"variable": variable})
    try:
        return asyncio.run(_run_main(run, config))
    except KeyboardInterrupt:  # pragma: no cover - a signal before the runtime installed its handlers
        return 130


async def _run_main(run: Callable[[C], Awaitable[int]], config: C) -> int:
    return await run(config)
