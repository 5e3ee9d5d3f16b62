"""Camera leases in the KV bucket: one holder at a time, expiry after the TTL, takeover, release, live pods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus.jetstream import RECORDER_LEASES_BUCKET
from argus_recorder.leases import Leases, LeaseValue, camera_key

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
    # b's heartbeat was not rewritten either: once it expires only the reader itself is left. The server removes
    # expired entries on its own timer, later under load: asked until TTL + 3 s, never before the TTL.
    await asyncio.sleep(TTL)
    deadline = asyncio.get_running_loop().time() + 3.0
    while (pods := (await a.snapshot()).pods) != frozenset({"rec-a"}):
        assert asyncio.get_running_loop().time() < deadline, pods
        await asyncio.sleep(0.2)


async def test_a_renewal_after_our_own_unacknowledged_write_keeps_the_lease(bus: Bus) -> None:
    a, b = await pair(bus)
    assert await a.acquire("cam-1")
    key = camera_key("cam-1", "main")
    entry = await a.kv.get(key)
    # a's renewal landed but its ack never came: the key moved on to a revision a did not see.
    await a.kv.update(key, entry.value or b"", last=entry.revision or 0)
    assert await a.renew("cam-1")
    assert a.held == {"cam-1"}
    assert await a.renew("cam-1")
    # b takes it (as after an expiry): a's next renewal finds b's name and gives the camera up.
    current = await a.kv.get(key)
    await b.kv.update(key, msgspec.json.encode(LeaseValue("rec-b", 0)), last=current.revision or 0)
    assert not await a.renew("cam-1")
    assert a.held == frozenset()


async def test_a_lease_the_bucket_expired_under_a_late_renewal_is_taken_again_unless_another_pod_has_it(
    bus: Bus,
) -> None:
    a, b = await pair(bus)
    assert await a.acquire("cam-1")
    assert await a.acquire("cam-2")
    # What the bucket's TTL does to a key not rewritten in time: its messages go, no delete marker is written.
    for camera in ("cam-1", "cam-2"):
        subject = f"$KV.{RECORDER_LEASES_BUCKET}.{camera_key(camera, 'main')}"
        await bus.js.purge_stream(f"KV_{RECORDER_LEASES_BUCKET}", subject=subject)
    assert (await b.snapshot()).owners == {}
    assert await a.renew("cam-1")  # nobody took it: a writes it again and goes on recording
    assert (await b.snapshot()).owners == {"cams.cam-1.main": "rec-a"}
    assert await b.acquire("cam-2")  # b was quicker for this one
    assert not await a.renew("cam-2")
    assert a.held == {"cam-1"}
    assert (await b.snapshot()).owners == {"cams.cam-1.main": "rec-a", "cams.cam-2.main": "rec-b"}
    # A released lease (a delete marker) is not written again by a late renewal either.
    await a.kv.delete(camera_key("cam-1", "main"))
    assert not await a.renew("cam-1")
