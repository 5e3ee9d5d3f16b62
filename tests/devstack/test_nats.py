"""NatsServer: a real nats-server with JetStream and the shared limits."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from argus_devstack.backends import NatsHandle
from argus_devstack.errors import MissingBinaryError, PortInUseError, ServerStateError
from argus_devstack.nats import NatsServer
from argus_devstack.ports import PortReservation, free_port, reserve_port
from argus_devstack.probes import nats_info
from argus_devstack.process import find_binary

FIVE_MB = 5 * 1024 * 1024


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Client]:
    client = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


def fetch_json(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        data = json.load(response)
    assert isinstance(data, dict)
    return data


async def test_jetstream_round_trip_of_a_5mb_message(nats_url: str) -> None:
    payload = os.urandom(FIVE_MB)
    async with connected(nats_url) as nc:
        assert nc.max_payload == 8 * 1024 * 1024
        js = nc.jetstream()
        await js.add_stream(name="BIG", subjects=["big.>"])
        ack = await js.publish("big.frame", payload)
        assert ack.stream == "BIG"
        sub = await js.pull_subscribe("big.>", durable="reader")
        messages = await sub.fetch(1, timeout=10)
        assert len(messages) == 1
        assert messages[0].data == payload
        await messages[0].ack()
        await sub.unsubscribe()


async def test_monitoring_reports_the_shared_limits(nats_server: NatsHandle) -> None:
    varz = await asyncio.to_thread(fetch_json, f"{nats_server.monitor_url}/varz")
    assert varz["max_payload"] == 8 * 1024 * 1024
    assert varz["max_pending"] == 64 * 1024 * 1024
    assert varz["write_deadline"] == 10 * 10**9
    assert varz["port"] == nats_server.port
    jsz = await asyncio.to_thread(fetch_json, f"{nats_server.monitor_url}/jsz")
    assert "config" in jsz


@pytest.mark.slow
async def test_stream_survives_stop_and_start_on_the_same_port(nats_server: NatsHandle) -> None:
    port = nats_server.port
    async with connected(nats_server.url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.a", b"before the outage")

    await asyncio.to_thread(nats_server.stop)
    assert not nats_server.running
    assert nats_info("127.0.0.1", port) is None
    await asyncio.to_thread(nats_server.start)
    assert nats_server.port == port

    async with connected(nats_server.url) as nc:
        js = nc.jetstream()
        info = await js.stream_info("KEEP")
        assert info.state.messages == 1
        message = await js.get_msg("KEEP", seq=1)
        assert message.data == b"before the outage"


async def test_kill_then_start(nats_server: NatsHandle) -> None:
    port = nats_server.port
    await asyncio.to_thread(nats_server.kill)
    assert not nats_server.running
    await asyncio.to_thread(nats_server.start)
    assert nats_server.port == port
    async with connected(nats_server.url) as nc:
        sub = await nc.subscribe("ping")
        await nc.publish("ping", b"pong")
        message = await sub.next_msg(timeout=5)
        assert message.data == b"pong"
        await sub.unsubscribe()


def test_persistent_data_dir_and_fixed_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    port = free_port()
    with NatsServer(data_dir=data_dir, port=port) as server:
        assert server.port == port
        assert server.url == f"nats://127.0.0.1:{port}"
        assert server.store_dir == data_dir / "jetstream"
        assert server.log_path.is_file()
    assert data_dir.is_dir(), "a persistent data folder is never removed"
    assert (data_dir / "nats.conf").is_file()


def test_temporary_data_is_removed_and_close_is_idempotent() -> None:
    server = NatsServer()
    server.start()
    data_dir = server.data_dir
    pid = server.pid
    assert pid is not None
    server.close()
    server.close()
    assert not data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ServerStateError):
        server.start()


def test_port_in_use_fails_with_the_log_tail() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = NatsServer(port=port, start_timeout=5)
        try:
            with pytest.raises(PortInUseError) as caught:
                server.start()
        finally:
            server.close()
    message = str(caught.value)
    assert "nats-server exited" in message
    assert "address already in use" in message.lower()


def test_a_taken_random_port_is_retried_with_another(monkeypatch: pytest.MonkeyPatch) -> None:
    real_reserve = reserve_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def first_one_taken(host: str = "127.0.0.1", port: int | None = None) -> PortReservation:
            # The race that retry covers: the port was free when picked and is bound before the server binds it.
            reservation = real_reserve(host, taken if not handed_out else port)
            handed_out.append(reservation.port)
            return reservation

        monkeypatch.setattr("argus_devstack.process.reserve_port", first_one_taken)
        with NatsServer() as server:
            assert handed_out[0] == taken
            assert server.port != taken
            assert "address already in use" in server.log_path.read_text()


def test_start_is_fast() -> None:
    durations = []
    for _ in range(3):
        began = time.perf_counter()
        with NatsServer():
            durations.append(time.perf_counter() - began)
    # Measured about 10 ms here; a fresh server per test must stay well under 200 ms.
    assert statistics.median(durations) < 0.2, durations


def test_missing_binary_names_the_package() -> None:
    with pytest.raises(MissingBinaryError, match=r"apt-get install nats-server-not-here"):
        find_binary("argus-no-such-binary", package="nats-server-not-here", extra_dirs=("/nonexistent",))
