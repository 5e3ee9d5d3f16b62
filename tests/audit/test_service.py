"""The audit service as real processes: a SIGKILL loses no event, two instances keep one order, the CLI verifies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from argus_core.audit.checkpoints import CheckpointKeys, CheckpointStore
from argus_core.audit.emitter import AuditEmitter
from argus_core.audit.verify import CheckpointSource, verify_log
from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_devstack.backends import S3Handle
from argus_devstack.ports import free_port
from tests.audit.support import tamper

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def env(
    nats_url: str,
    database_url: str,
    s3_server: S3Handle,
    object_store: ObjectStore,
    key_files: tuple[Path, Path],
) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    bucket = object_store.config.audit_bucket
    base.update(
        {
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_LOG_FORMAT": "json",
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_DB_URL": database_url,
            "ARGUS_S3_ENDPOINT": s3_server.endpoint,
            "ARGUS_S3_ACCESS_KEY": s3_server.access_key,
            "ARGUS_S3_SECRET_KEY": s3_server.secret_key,
            "ARGUS_S3_RECORDINGS_BUCKET": bucket + "-rec",
            "ARGUS_S3_EVIDENCE_BUCKET": bucket + "-ev",
            "ARGUS_S3_AUDIT_BUCKET": bucket,
            "ARGUS_AUDIT_SIGNING_KEY": str(key_files[0]),
            "ARGUS_AUDIT_BATCH": "25",
            "ARGUS_AUDIT_FETCH_WAIT_S": "0.2",
            "ARGUS_AUDIT_CHECKPOINT_INTERVAL_S": "1",
            "ARGUS_SHUTDOWN_BUDGET_S": "10",
        }
    )
    return base


class Service:
    """One `python -m argus_audit` process."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.port = free_port()
        self.env = {**env, "ARGUS_HTTP_PORT": str(self.port), "ARGUS_POD_NAME": name}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "argus_audit",
            env=self.env,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    pytest.fail(f"audit exited with {self.proc.returncode}: {await self.stderr()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail("audit did not become ready")

    async def stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        return (await self.proc.stderr.read()).decode()[-3000:]

    async def metric(self, name: str) -> float:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            for line in (await response.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.proc.communicate(), 20)
        return self.proc.returncode or 0, err.decode()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.communicate()


@pytest.fixture
async def services(env: dict[str, str]) -> AsyncIterator[Callable[[str], Awaitable[Service]]]:
    started: list[Service] = []

    async def start(name: str) -> Service:
        service = Service(env, name)
        started.append(service)
        await service.start()
        return service

    try:
        yield start
    finally:
        for service in started:
            await service.close()


async def wait_count(pool: asyncpg.Pool, expected: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (n := await pool.fetchval("SELECT count(*) FROM audit_log")) < expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{n} of {expected} events stored after {within_s:.0f} s")
        await asyncio.sleep(0.2)


async def produce(nats_url: str, service: str, n: int, pace_s: float = 0.0) -> list[str]:
    bus = await Bus.connect(nats_url, name=f"producer-{service}")
    try:
        emitter = AuditEmitter(bus, service)
        ids = []
        for i in range(n):
            event = await emitter.emit("live.view.start", actor="op-1", camera=f"cam-{i % 7}", reason=service)
            ids.append(event.id)
            if pace_s:
                await asyncio.sleep(pace_s)
        return ids
    finally:
        await bus.drain()


async def test_a_killed_audit_service_loses_no_event(
    services: Callable[[str], Awaitable[Service]],
    nats_url: str,
    pool: asyncpg.Pool,
    checkpoints: CheckpointStore,
    keys: CheckpointKeys,
) -> None:
    audit = await services("audit-a")
    producing = asyncio.create_task(produce(nats_url, "liveview", 600, pace_s=0.002))
    try:
        await wait_count(pool, 150, within_s=30)
        await audit.kill()  # mid-stream: some batches fetched, some committed but not yet acked
        stored_at_kill = await pool.fetchval("SELECT count(*) FROM audit_log")
        assert stored_at_kill < 600
        await asyncio.sleep(0.5)
        restarted = await services("audit-a")
        sent = await asyncio.wait_for(producing, 60)
        # What the killed process fetched without acking comes back after the consumer's ack wait (30 s).
        await wait_count(pool, 600, within_s=70)
        code, err = await restarted.terminate()
        assert code == 0, err
    finally:
        if not producing.done():
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)
    rows = await pool.fetch("SELECT seq, event_id FROM audit_log ORDER BY seq")
    assert [r["seq"] for r in rows] == list(range(1, 601))
    assert sorted(r["event_id"] for r in rows) == sorted(sent)
    report = await verify_log(pool, CheckpointSource(checkpoints, keys))
    assert report.ok, report.summary()
    assert report.checkpoint_seq == 600  # the final checkpoint, written on SIGTERM


async def test_two_instances_and_concurrent_producers_keep_one_total_order(
    services: Callable[[str], Awaitable[Service]],
    nats_url: str,
    pool: asyncpg.Pool,
    checkpoints: CheckpointStore,
    keys: CheckpointKeys,
) -> None:
    first = await services("audit-a")
    second = await services("audit-b")
    producers = ["api", "liveview", "ptz", "retention"]
    sent = await asyncio.gather(*(produce(nats_url, p, 300, pace_s=0.001) for p in producers))
    await wait_count(pool, 1200, within_s=60)
    appended = [await first.metric("argus_audit_appended_total"), await second.metric("argus_audit_appended_total")]
    assert sum(appended) == 1200
    assert all(n > 0 for n in appended), appended  # both appended, to the same chain
    rows = await pool.fetch("SELECT seq, event_id, body::jsonb ->> 'reason' AS producer FROM audit_log ORDER BY seq")
    assert [r["seq"] for r in rows] == list(range(1, 1201))
    assert sorted(r["event_id"] for r in rows) == sorted(i for ids in sent for i in ids)
    # Each producer's events keep their order within any one batch of the chain; overall order is the chain's.
    report = await verify_log(pool, CheckpointSource(checkpoints, keys))
    assert report.ok, report.summary()


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argus_audit",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_cli_verifies_and_names_the_tampered_entry(
    services: Callable[[str], Awaitable[Service]], env: dict[str, str], nats_url: str, pool: asyncpg.Pool
) -> None:
    audit = await services("audit-a")
    await produce(nats_url, "api", 12)
    await wait_count(pool, 12, within_s=30)
    code, err = await audit.terminate()
    assert code == 0, err
    code, out, err = await run_cli(env, "verify")
    assert code == 0, out + err
    assert "audit log verified: 12 entries" in out
    assert "signed checkpoint at 12 matches" in out
    code, out, _ = await run_cli(env, "checkpoint")
    assert (code, out.strip()) == (0, "the newest entry is already checkpointed")
    code, out, _ = await run_cli(env, "purge", "--dry-run")
    assert (code, out.strip()) == (0, "nothing to purge")
    code, out, _ = await run_cli(env, "purge", "--dry-run", "--now", "2100-01-01T00:00:00Z")
    assert (code, out.strip()) == (0, "would purge entries 1 to 12 (12 entries)")
    await tamper(pool, "UPDATE audit_log SET body = replace(body, 'op-1', 'op-2') WHERE seq = 5")
    code, out, err = await run_cli(env, "verify")
    assert code == 1, out + err
    assert "changed at entry 5" in out
    code, out, _ = await run_cli(env, "verify", "--json", "--no-checkpoints")
    assert code == 1
    report = json.loads(out)
    assert report["problem"]["kind"] == "changed"
    assert report["problem"]["seq"] == 5
    assert report["checkpoints"] == "not_checked"
    code, out, err = await run_cli({**env, "ARGUS_DB_URL": "mysql://x"}, "verify")
    assert code == 2
    assert "ARGUS_DB_URL" in err
