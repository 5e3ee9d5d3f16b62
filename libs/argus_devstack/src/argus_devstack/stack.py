"""The local stack: every Argus service and simulated cameras on loopback, with real servers.

`./dev up` runs `python -m argus_devstack.stack`: it starts nats-server with JetStream, a private Postgres cluster
and an S3 server (a `minio` binary if on PATH, else moto's server), generates a token signing key, applies the
schema, registers the simulated cameras, starts every service as its own process, waits until each reports
ready, and prints where the console and API are. Ctrl-C (or SIGTERM) stops the services (each drains within its
budget) and then the servers. State stays under `.state/` (git-ignored) for the next run; moto keeps objects in
memory, so recordings in it do not survive a restart (a `minio` binary does keep them).

`--check` brings everything up, reports, and stops again: CI uses it to prove the command works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from argus_core.config import variables
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.identity import Grant, TokenIssuer, generate_keypair
from argus_devstack.nats import NatsServer
from argus_devstack.ports import free_port
from argus_devstack.postgres import PostgresServer
from argus_devstack.s3 import S3Kind, S3Server

log = logging.getLogger("argus.stack")

SERVICES = ("api", "ingest", "recorder", "liveview", "ptz", "retention", "audit")
DEFAULT_PORTS = {
    "nats": 14222,
    "postgres": 15432,
    "s3": 19000,
    "api": 8080,
    "ingest": 8081,
    "recorder": 8082,
    "liveview": 8083,
    "ptz": 8084,
    "retention": 8085,
    "audit": 8086,
    "simcam": 8090,
    "rtsp": 8554,
}
KEY_ID = "local-dev"
AUDIT_KEY_ID = "local-dev-audit"


class StackError(RuntimeError):
    pass


class _Stop(Exception):
    """Raised in the main thread by SIGTERM or SIGINT."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def port_for(name: str, taken: set[int]) -> int:
    """The usual port of `name` unless it is busy (then any free one), from ARGUS_STACK_<NAME>_PORT if set."""
    wanted = int(os.environ.get(f"ARGUS_STACK_{name.upper()}_PORT", DEFAULT_PORTS[name]))  # 0: any free port
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            wanted = 0
    if wanted == 0 or wanted in taken:
        wanted = free_port()
    taken.add(wanted)
    return wanted


@dataclass
class ServiceProcess:
    name: str
    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logfile:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,  # Ctrl-C in the terminal reaches the stack, which stops us in order
            )
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:  # noqa: S310
                return bool(json.loads(response.read()).get("ready"))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            self.proc.kill()
            return self.proc.wait()


def ensure_keys(state: Path, key_id: str = KEY_ID) -> tuple[Path, Path]:
    """An Ed25519 key pair under the state folder, made once: `<key_id>.key` and `<key_id>.pem`."""
    keys = state / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    private, public = keys / f"{key_id}.key", keys / f"{key_id}.pem"
    if not private.exists() or not public.exists():
        priv, pub = generate_keypair()
        private.write_bytes(priv)
        private.chmod(0o600)
        public.write_bytes(pub)
    return private, public


def only_what_it_reads(service: str, env: dict[str, str]) -> dict[str, str]:
    """`env` without the ARGUS_ variables that the service's Config does not read (they would only warn)."""
    config = importlib.import_module(f"argus_{service}.config").Config
    wanted = set(variables(config))
    return {k: v for k, v in env.items() if not k.startswith("ARGUS_") or k in wanted}


def simcam_available() -> bool:
    return importlib.util.find_spec("argus_simcam.service") is not None


@dataclass(frozen=True)
class SimCamera:
    id: str
    name: str
    latitude: float
    longitude: float


def simulated_cameras(count: int) -> list[SimCamera]:
    """A small town centre: cameras along a street, for the register and for simcam's fleet."""
    streets = ["High St", "Market Sq", "Station Rd", "Church Ln", "Bridge St", "Park Rd", "Mill Ln", "Castle St"]
    return [
        SimCamera(f"cam-{i + 1:02d}", f"{streets[i % len(streets)]} {i // len(streets) + 1}", 52.63 + i * 0.001, -1.13)
        for i in range(count)
    ]


async def register_cameras(dsn: str, cameras: list[SimCamera], rtsp_port: int, simcam_port: int) -> None:
    pool = await create_pool(DatabaseConfig(url=dsn, pool_max=2))
    try:
        await migrate(pool)
        await pool.execute(
            "INSERT INTO sites (id, name) VALUES ('town-centre', 'Town centre') ON CONFLICT (id) DO NOTHING"
        )
        for cam in cameras:
            await pool.execute(
                """
                INSERT INTO cameras (id, name, site_id, latitude, longitude, main_url, sub_url, onvif_url,
                                     username, password, has_ptz)
                VALUES ($1, $2, 'town-centre', $3, $4, $5, $6, $7, 'argus', 'simcam', true)
                ON CONFLICT (id) DO UPDATE SET main_url = EXCLUDED.main_url, sub_url = EXCLUDED.sub_url,
                    onvif_url = EXCLUDED.onvif_url, updated_at = now()
                """,
                cam.id,
                cam.name,
                cam.latitude,
                cam.longitude,
                f"rtsp://127.0.0.1:{rtsp_port}/{cam.id}/main",
                f"rtsp://127.0.0.1:{rtsp_port}/{cam.id}/sub",
                f"http://127.0.0.1:{simcam_port}/{cam.id}/onvif/device_service",
            )
    finally:
        await pool.close()


def postgres_dir(state: Path) -> Path:
    """Where the stack's Postgres keeps its data: under the state folder, unless the unprivileged account that
    Postgres must run as (it refuses root) cannot reach it there (a checkout in /root), then under /var/tmp."""
    wanted = state / "postgres"
    if os.geteuid() != 0:
        return wanted
    for parent in [wanted.parent, *wanted.parent.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
            elsewhere = Path("/var/tmp") / f"argus-state-{digest}" / "postgres"
            log.info("postgres data in %s (%s is not reachable by the postgres account)", elsewhere, parent)
            return elsewhere
    return wanted


@contextlib.contextmanager
def servers(state: Path, taken: set[int]) -> Iterator[tuple[NatsServer, PostgresServer, S3Server]]:
    with contextlib.ExitStack() as stack:
        nats = stack.enter_context(NatsServer(data_dir=state / "nats", port=port_for("nats", taken)))
        nats.start()
        log.info("nats-server with JetStream on %s", nats.url)
        pg = stack.enter_context(
            PostgresServer(data_dir=postgres_dir(state), port=port_for("postgres", taken), fast=False)
        )
        pg.start()
        log.info("postgres on 127.0.0.1:%d", pg.port)
        # The test-only ARGUS_TEST_S3_* variables are not for the stack.
        kind: S3Kind = "minio" if shutil.which("minio") else "moto"
        s3 = stack.enter_context(S3Server(data_dir=state / "s3", port=port_for("s3", taken), kind=kind))
        s3.start()
        log.info("S3 (%s) on %s", s3.kind, s3.endpoint)
        yield nats, pg, s3


def run_stack(state: Path, camera_count: int, check: bool) -> int:
    state.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)
    procs: list[ServiceProcess] = []
    try:
        with servers(state, taken) as (nats, pg, s3):
            if "argus" not in pg.psql("SELECT datname FROM pg_database"):
                pg.create_database("argus")
            dsn = pg.dsn("argus")
            private, public = ensure_keys(state)
            audit_private, audit_public = ensure_keys(state, AUDIT_KEY_ID)
            cameras = simulated_cameras(camera_count)
            rtsp_port = port_for("rtsp", taken)
            simcam_port = port_for("simcam", taken)
            asyncio.run(register_cameras(dsn, cameras, rtsp_port, simcam_port))
            common = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
            common.update(
                {
                    "ARGUS_HTTP_HOST": "127.0.0.1",
                    "ARGUS_LOG_FORMAT": "json",
                    "ARGUS_NATS_URL": nats.url,
                    "ARGUS_DB_URL": dsn,
                    "ARGUS_S3_ENDPOINT": s3.endpoint,
                    "ARGUS_S3_ACCESS_KEY": s3.access_key,
                    "ARGUS_S3_SECRET_KEY": s3.secret_key,
                    "ARGUS_TOKENS_PUBLIC_KEYS": str(public),
                    "ARGUS_SHUTDOWN_BUDGET_S": "10",
                }
            )
            for name in SERVICES:
                env = dict(common, ARGUS_HTTP_PORT=str(port_for(name, taken)))
                if name == "api":
                    env["ARGUS_TOKENS_PRIVATE_KEY"] = str(private)
                if name in ("api", "audit"):
                    env["ARGUS_AUDIT_PUBLIC_KEYS"] = str(audit_public)
                if name == "audit":
                    env["ARGUS_AUDIT_SIGNING_KEY"] = str(audit_private)
                if name == "recorder":
                    env["ARGUS_RECORDER_SPOOL_DIR"] = str(state / "spool")
                procs.append(
                    ServiceProcess(
                        name, f"argus_{name}", int(env["ARGUS_HTTP_PORT"]), env, state / "logs" / f"{name}.log"
                    )
                )
            if simcam_available():
                env = {k: v for k, v in common.items() if not k.startswith("ARGUS_")}
                env.update(
                    {
                        "ARGUS_HTTP_HOST": "127.0.0.1",
                        "ARGUS_HTTP_PORT": str(simcam_port),
                        "ARGUS_LOG_FORMAT": "json",
                        "ARGUS_RTSP_HOST": "127.0.0.1",
                        "ARGUS_RTSP_PORT": str(rtsp_port),
                        "ARGUS_CAMERAS": ",".join(c.id for c in cameras),
                        "ARGUS_USERNAME": "argus",
                        "ARGUS_PASSWORD": "simcam",
                    }
                )
                procs.insert(
                    0, ServiceProcess("simcam", "argus_simcam", simcam_port, env, state / "logs" / "simcam.log")
                )
            for p in procs:
                p.start()
            _wait_all_ready(procs, timeout=90)
            token = TokenIssuer.from_file(str(private), issuer="argus", audience="argus", ttl_s=12 * 3600).issue(
                "local-operator",
                ["supervisor"],
                [Grant(actions=("live", "playback", "export", "ptz", "configure", "hold"), cameras=("*",))],
            )
            (state / "token").write_text(token + "\n")
            _report(procs, nats, pg.port, s3.endpoint, state)
            if check:
                log.info("--check: everything is up; stopping")
                return _stop_all(procs)
            _supervise(procs)
    except _Stop as stop:
        log.info("%s: stopping the stack", stop)
        return _stop_all(procs)
    except StackError as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message says what to look at
        _stop_all(procs)
        return 1
    return _stop_all(procs)


def _wait_all_ready(procs: list[ServiceProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = {p.name: p for p in procs}
    while pending:
        for name, p in list(pending.items()):
            if p.proc is not None and p.proc.poll() is not None:
                raise StackError(f"{name} exited with {p.proc.returncode} while starting; see {p.log_path}")
            if p.ready():
                log.info("%s ready on :%d", name, p.port)
                del pending[name]
        if time.monotonic() > deadline:
            raise StackError(
                f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))}; see {procs[0].log_path.parent}"
            )
        time.sleep(0.2)


def _report(procs: list[ServiceProcess], nats: NatsServer, pg_port: int, s3_endpoint: str, state: Path) -> None:
    api = next(p for p in procs if p.name == "api")
    lines = [
        "",
        "Argus is up.",
        f"  console      http://127.0.0.1:{api.port}/",
        f"  API          http://127.0.0.1:{api.port}/api/v1/  (token in {state / 'token'})",
        f"  NATS         {nats.url}",
        f"  Postgres     postgresql://postgres@127.0.0.1:{pg_port}/argus",
        f"  S3           http://{s3_endpoint}",
    ]
    lines += [f"  {p.name:<12} http://127.0.0.1:{p.port}/readyz" for p in procs]
    lines += [f"  logs         {state / 'logs'}", "Ctrl-C stops everything.", ""]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _supervise(procs: list[ServiceProcess]) -> None:
    """Restart a service that dies, with a growing delay, and say so."""
    while True:
        time.sleep(1)
        for p in procs:
            if p.proc is not None and p.proc.poll() is not None:
                delay = min(30, 2**p.restarts)
                log.error(
                    "%s exited with %s; restarting in %d s (log: %s)", p.name, p.proc.returncode, delay, p.log_path
                )
                time.sleep(delay)
                p.restarts += 1
                p.start()


def _stop_all(procs: list[ServiceProcess]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans mid-stop
    for p in reversed(procs):
        p.terminate()
    code = 0
    for p in reversed(procs):
        rc = p.wait(timeout=20)
        if rc not in (None, 0):
            log.warning("%s exited with %s", p.name, rc)
            code = 1
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="argus-stack", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("ARGUS_STATE_DIR", ".state")))
    parser.add_argument("--cameras", type=int, default=int(os.environ.get("ARGUS_STACK_CAMERAS", "4")))
    parser.add_argument("--check", action="store_true", help="start, report, and stop again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s stack %(levelname)s %(message)s")
    return run_stack(args.state_dir.resolve(), args.cameras, args.check)


if __name__ == "__main__":
    sys.exit(main())
