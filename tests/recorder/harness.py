"""Recorder processes and what they stored: spawn `python -m argus_recorder`, read the index, check the objects."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from minio import Minio

from argus_devstack.ports import free_port
from argus_devstack.s3 import S3Target

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stores:
    nats_url: str
    database_url: str
    s3: S3Target


def recorder_env(stores: Stores, pod: str, spool: Path, port: int, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_POD_NAME": pod,
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_LOG_FORMAT": "json",
            "ARGUS_LOG_LEVEL": "info",
            "ARGUS_NATS_URL": stores.nats_url,
            "ARGUS_DB_URL": stores.database_url,
            "ARGUS_S3_ENDPOINT": stores.s3.endpoint,
            "ARGUS_S3_ACCESS_KEY": stores.s3.access_key,
            "ARGUS_S3_SECRET_KEY": stores.s3.secret_key,
            "ARGUS_S3_RECORDINGS_BUCKET": stores.s3.bucket,
            "ARGUS_S3_TIMEOUT_S": "5",
            "ARGUS_SHUTDOWN_BUDGET_S": "20",
            "ARGUS_RECORDER_SPOOL_DIR": str(spool),
            "ARGUS_RECORDER_IDLE_FLUSH_S": "3",
            "ARGUS_RECORDER_FETCH_INTERVAL_S": "0.1",
        }
    )
    env.update({f"ARGUS_RECORDER_{k.upper()}": v for k, v in settings.items()})
    return env


class RecorderProcess:
    """One recorder pod as a child process; its log goes to a file in the test's folder."""

    def __init__(self, stores: Stores, workdir: Path, pod: str, **settings: str) -> None:
        self.pod = pod
        self.port = free_port()
        self.spool = workdir / f"spool-{pod}"
        self.log_path = workdir / f"{pod}.log"
        self.env = recorder_env(stores, pod, self.spool, self.port, **settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, reaped by stop()/kill()
                [sys.executable, "-m", "argus_recorder"],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise AssertionError(f"recorder {self.pod} exited before it was ready:\n{self.log_tail()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"recorder {self.pod} not ready in {within_s} s:\n{self.log_tail()}")

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            return await response.text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def terminate(self, within_s: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self._wait(within_s)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self._wait(10.0)

    async def _wait(self, within_s: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + within_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"recorder {self.pod} did not exit in {within_s} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def errors(self) -> list[str]:
        return [r["message"] for r in self.log_records() if r.get("level") in ("error", "critical")]


# --- the index ------------------------------------------------------------------------------------------------


async def segment_rows(database_url: str, camera: str | None = None) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('segments') IS NOT NULL")
        if not exists:
            return []
        if camera is None:
            return list(await conn.fetch("SELECT * FROM segments ORDER BY camera, start_time"))
        return list(await conn.fetch("SELECT * FROM segments WHERE camera = $1 ORDER BY start_time", camera))
    finally:
        await conn.close()


async def gap_rows(database_url: str, camera: str | None = None) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('recording_gaps') IS NOT NULL")
        if not exists:
            return []
        if camera is None:
            return list(await conn.fetch("SELECT * FROM recording_gaps ORDER BY camera, start_time"))
        return list(await conn.fetch("SELECT * FROM recording_gaps WHERE camera = $1 ORDER BY start_time", camera))
    finally:
        await conn.close()


async def wait_for(check: Any, *, within_s: float, every_s: float = 0.25, what: str = "condition") -> Any:
    """Poll an async `check()` until it returns something truthy."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what} not reached in {within_s} s (last: {last!r})")


def frames_by_seq(rows: list[asyncpg.Record]) -> dict[str, list[int]]:
    """Every (session) seq the segments hold, per session, in order: duplicates show up twice."""
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row["session"], []).extend(range(row["first_seq"], row["last_seq"] + 1))
    return {k: sorted(v) for k, v in out.items()}


# --- objects --------------------------------------------------------------------------------------------------


def s3_client(target: S3Target) -> Minio:
    return Minio(
        target.endpoint,
        access_key=target.access_key,
        secret_key=target.secret_key,
        secure=target.secure,
        region=target.region,
    )


def get_object(client: Minio, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


@dataclass(frozen=True)
class Probe:
    codec: str
    width: int
    height: int
    packets: int
    decode_errors: str


def probe(path: Path) -> Probe:
    """ffprobe the stream (packets counted) and decode every frame with ffmpeg; any complaint is an error."""
    out = subprocess.run(
        [
            "/usr/bin/ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
            "-show_entries", "stream=codec_name,width,height,nb_read_packets", "-of", "json", str(path),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    assert not out.stderr.strip(), out.stderr.decode()
    stream = json.loads(out.stdout)["streams"][0]
    decoded = subprocess.run(
        ["/usr/bin/ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    errors = (
        decoded.stderr.decode().strip()
        if decoded.returncode == 0
        else f"rc={decoded.returncode} " + decoded.stderr.decode()
    )
    return Probe(
        stream["codec_name"], int(stream["width"]), int(stream["height"]), int(stream["nb_read_packets"]), errors
    )


def check_segment(client: Minio, bucket: str, row: asyncpg.Record, workdir: Path) -> Probe:
    """Fetch a segment and its init segment, check the SHA-256 against the index, probe and decode them."""
    media = get_object(client, bucket, row["object_key"])
    assert hashlib.sha256(media).digest() == bytes(row["sha256"]), row["object_key"]
    assert len(media) == row["bytes"]
    init = get_object(client, bucket, row["init_key"])
    path = workdir / (hashlib.blake2b(row["object_key"].encode(), digest_size=8).hexdigest() + ".mp4")
    path.write_bytes(init + media)
    try:
        return probe(path)
    finally:
        path.unlink(missing_ok=True)
