"""Services as processes: configuration errors, readiness, SIGTERM within the budget."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from nats.errors import NoRespondersError

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.identity import generate_keypair
from argus_devstack.ports import free_port
from argus_devstack.s3 import S3Target

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["ingest", "recorder", "liveview", "ptz", "retention", "audit", "api"]


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update({"ARGUS_HTTP_HOST": "127.0.0.1", "ARGUS_LOG_FORMAT": "json"})
    env.update(extra)
    return env


async def spawn(module: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_ready(port: int, proc: asyncio.subprocess.Process, within_s: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                pytest.fail(f"service exited with {proc.returncode} before it was ready")
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        body: dict[str, object] = await response.json()
                        return body
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("service did not become ready")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    private, public = generate_keypair()
    (tmp_path / "test-key.key").write_bytes(private)
    (tmp_path / "test-key.pem").write_bytes(public)
    return {
        "ARGUS_TOKENS_PUBLIC_KEYS": str(tmp_path / "test-key.pem"),
        "ARGUS_TOKENS_PRIVATE_KEY": str(tmp_path / "test-key.key"),
    }


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"ARGUS_HTTP_PORT": "eighty"}, "ARGUS_HTTP_PORT"),
        ({"ARGUS_DB_URL": "mysql://nope"}, "ARGUS_DB_URL"),
        ({}, "ARGUS_DB_URL"),
        ({"ARGUS_SHUTDOWN_BUDGET_S": "-1"}, "ARGUS_SHUTDOWN_BUDGET_S"),
    ],
)
async def test_a_bad_variable_stops_the_service_with_a_message_naming_it(extra: dict[str, str], variable: str) -> None:
    env = base_env({"ARGUS_DB_URL": "postgresql://x/y", "ARGUS_S3_ENDPOINT": "127.0.0.1:9", **extra})
    if not extra:
        del env["ARGUS_DB_URL"]
    env.update({"ARGUS_S3_ACCESS_KEY": "a", "ARGUS_S3_SECRET_KEY": "b"})
    proc = await spawn("argus_recorder", env)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "error"]
    assert errors, stderr.decode()
    assert errors[0]["variable"] == variable
    assert variable in errors[0]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_becomes_ready_and_stops_cleanly_on_sigterm(
    service: str, nats_url: str, database_url: str, s3_bucket: S3Target, keys: dict[str, str]
) -> None:
    port = free_port()
    env = base_env(
        {
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_DB_URL": database_url,
            "ARGUS_S3_ENDPOINT": s3_bucket.endpoint,
            "ARGUS_S3_ACCESS_KEY": s3_bucket.access_key,
            "ARGUS_S3_SECRET_KEY": s3_bucket.secret_key,
            "ARGUS_S3_RECORDINGS_BUCKET": s3_bucket.bucket,
            "ARGUS_S3_EVIDENCE_BUCKET": s3_bucket.bucket + "-ev",
            "ARGUS_S3_AUDIT_BUCKET": s3_bucket.bucket + "-au",
            "ARGUS_SHUTDOWN_BUDGET_S": "10",
            **keys,
        }
    )
    proc = await spawn(f"argus_{service}", env)
    try:
        body = await wait_ready(port, proc)
        assert body["ready"] is True
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "argus_service_ready 1.0" in await response.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert time.monotonic() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_work_within_the_budget(nats_url: str) -> None:
    port = free_port()
    env = base_env(
        {
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_SHUTDOWN_BUDGET_S": "6",
            "ARGUS_WORK_S": "1.5",
        }
    )
    proc = await spawn("tests.core.inflight_service", env)
    bus = await Bus.connect(nats_url, name="client")
    try:
        await wait_ready(port, proc)
        command = m.PtzCommand(camera="cam-1", actor=m.Actor(subject="t"), action=m.PtzGetStatus())
        replies = [
            asyncio.create_task(bus.request(s.PTZ_COMMAND, command, s.PTZ_RESULT, reply_timeout_s=5, camera="cam-1"))
            for _ in range(3)
        ]
        await asyncio.sleep(0.3)  # the requests are in flight
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*replies)
        assert all(r.ok and r.detail == "done" for r in results)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert elapsed < 6
        # Once stopping, it takes no new work.
        with pytest.raises((TimeoutError, NoRespondersError)):
            await bus.request(s.PTZ_COMMAND, command, s.PTZ_RESULT, reply_timeout_s=0.5, camera="cam-1")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bus.drain()
