"""Camera leases in the KV bucket: one holder at a time, expiry after the TTL, takeover, release, live pods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus.jetstream import RECORDER_LEASES_BUCKET
from argus_recorder.leases import Leases

TTL = 2.0


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="test-leases")
    try:
        await b.ensure(topology(TopologyOptions(lease_ttl_s=TTL)))
        yield b
    finally:
        await b.drain()


async def pair(bus: Bus) -> tuple[Leases, Leases]:
    a = Leases(bus.js, RECORDER_LEASES_BUCKET, "rec-a", "main", TTL)
    b = Leases(bus.js, RECORDER_LEASES_BUCKET, "rec-b", "main", TTL)
    await a.open()
    await b.open()
    return a, b


async def test_one_holder_until_it_stops_renewing_then_the_other_takes_over(bus: Bus) -> None:
    a, b = await pair(bus)
    assert await a.acquire("cam-1")
    assert not await b.acquire("cam-1")
    for _ in range(3):  # renewed past the TTL: still a's
        await asyncio.sleep(TTL / 2)
        assert await a.renew("cam-1")
    assert not await b.acquire("cam-1")
    assert (await b.snapshot()).owners == {"cams.cam-1.main": "rec-a"}
    await asyncio.sleep(TTL + 0.5)  # a stopped renewing (it died)
    assert (await b.snapshot()).owners == {}
    assert await b.acquire("cam-1")
    assert not await a.renew("cam-1")  # a finds out at its next renewal, and stops recording
    assert a.held == frozenset()
    assert b.held == frozenset({"cam-1"})


async def test_a_released_lease_is_free_at_once_and_heartbeats_say_who_is_alive(bus: Bus) -> None:
    a, b = await pair(bus)
    await a.heartbeat()
    await b.heartbeat()
    assert (await a.snapshot()).pods == frozenset({"rec-a", "rec-b"})
    assert await a.acquire("cam-1")
    await a.release("cam-1")
    assert await b.acquire("cam-1")
    await a.leave()
    assert (await b.snapshot()).pods == frozenset({"rec-b"})
    await asyncio.sleep(TTL + 0.5)  # b's heartbeat was not rewritten either: only the reader itself is left
    assert (await a.snapshot()).pods == frozenset({"rec-a"})
