"""The lease table against a real nats-server: renewals that meet a write they did not see acked, keys that name
this pod without it holding them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import nats.js.errors
import pytest
from nats.js.kv import KeyValue

from argus_core.bus import Bus, topology
from argus_core.bus.jetstream import INGEST_LEASES_BUCKET
from argus_ingest.leases import Lease, LeaseTable, camera_key, plan


@pytest.fixture
async def leases(nats_url: str) -> AsyncIterator[tuple[KeyValue, LeaseTable]]:
    """The bucket, and pod-a's table mirroring it (TTL 30 s: nothing goes stale during a test)."""
    bus = await Bus.connect(nats_url, name="t")
    stop = asyncio.Event()
    try:
        await bus.ensure(topology())
        kv = await bus.js.key_value(INGEST_LEASES_BUCKET)
        table = LeaseTable(kv, pod="pod-a", ttl_s=30.0)
        mirror = asyncio.create_task(table.run(stop))
        await asyncio.wait_for(table.ready.wait(), 5)
        yield kv, table
        stop.set()
        await mirror
    finally:
        stop.set()
        await bus.close()


async def test_a_renewal_after_our_own_unacknowledged_write_keeps_the_lease_and_another_pods_write_ends_it(
    leases: tuple[KeyValue, LeaseTable],
) -> None:
    kv, table = leases
    acquired = await table.acquire("cam-1")
    assert acquired is not None

    # A renewal whose ack was lost: the server stored it, this pod never learnt the new revision.
    now = time.time_ns()
    ours = msgspec.json.encode(Lease(pod="pod-a", since_ns=now, renewed_ns=now))
    landed = await kv.update(camera_key("cam-1"), ours, last=acquired.revision)
    assert await table.renew("cam-1") is True
    assert table.held == {"cam-1"}
    entry = await kv.get(camera_key("cam-1"))
    assert (entry.revision or 0) > landed
    assert msgspec.json.decode(entry.value or b"", type=Lease).pod == "pod-a"
    assert await table.renew("cam-1") is True  # and it goes on from the revision it wrote

    # Another pod's write (it took the camera over): the lease is lost, and stays lost.
    theirs = msgspec.json.encode(Lease(pod="pod-b", since_ns=now, renewed_ns=now))
    await kv.put(camera_key("cam-1"), theirs)
    assert await table.renew("cam-1") is False
    assert table.held == frozenset()
    assert msgspec.json.decode((await kv.get(camera_key("cam-1"))).value or b"", type=Lease).pod == "pod-b"

    # A deleted lease (released by whoever held it) is lost too, not re-created by a renewal.
    again = await table.acquire("cam-2")
    assert again is not None
    await kv.delete(camera_key("cam-2"))
    assert await table.renew("cam-2") is False
    assert table.held == frozenset()


async def test_a_lease_naming_this_pod_that_it_does_not_hold_is_taken_back_at_once(
    leases: tuple[KeyValue, LeaseTable],
) -> None:
    kv, table = leases
    # A create whose ack never came (or a former life of pod-a): the key names pod-a, pod-a does not hold it.
    now = time.time_ns()
    await kv.create(camera_key("cam-3"), msgspec.json.encode(Lease(pod="pod-a", since_ns=now, renewed_ns=now)))
    await kv.create(camera_key("cam-4"), msgspec.json.encode(Lease(pod="pod-b", since_ns=now, renewed_ns=now)))
    deadline = time.monotonic() + 5
    while camera_key("cam-4") not in table._known:  # noqa: SLF001 - waiting for the mirror to see both
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert table.owners() == {"cam-4": "pod-b"}  # fresh for 30 s, yet not counted as pod-a's
    step = plan(["cam-3", "cam-4"], table.owners(), {"pod-a", "pod-b"}, "pod-a")
    assert step.take == ("cam-3",)
    assert await table.acquire("cam-3") is not None
    assert await table.acquire("cam-4") is None  # another pod's fresh lease stays its own
    assert table.held == {"cam-3"}
    assert table.owners() == {"cam-3": "pod-a", "cam-4": "pod-b"}


async def test_a_lease_the_bucket_expired_under_a_late_renewal_is_taken_again_unless_another_pod_has_it(
    nats_url: str, leases: tuple[KeyValue, LeaseTable]
) -> None:
    kv, table = leases
    assert await table.acquire("cam-5") is not None
    assert await table.acquire("cam-6") is not None
    # What the bucket's TTL does to a key not rewritten in time: its messages go, and no delete marker is written
    # (a subject purge of the stream does the same, without waiting for the TTL).
    bus = await Bus.connect(nats_url, name="t-purge")
    try:
        for camera in ("cam-5", "cam-6"):
            await bus.js.purge_stream(f"KV_{INGEST_LEASES_BUCKET}", subject=f"$KV.{INGEST_LEASES_BUCKET}.cams.{camera}")
    finally:
        await bus.close()
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(camera_key("cam-5"))

    # Nobody took cam-5: the renewal writes it again and pod-a keeps pulling.
    assert await table.renew("cam-5") is True
    assert msgspec.json.decode((await kv.get(camera_key("cam-5"))).value or b"", type=Lease).pod == "pod-a"
    assert await table.renew("cam-5") is True

    # pod-b created cam-6 in the meantime: its lease stands, pod-a's is lost.
    now = time.time_ns()
    await kv.create(camera_key("cam-6"), msgspec.json.encode(Lease(pod="pod-b", since_ns=now, renewed_ns=now)))
    assert await table.renew("cam-6") is False
    assert table.held == {"cam-5"}
    assert msgspec.json.decode((await kv.get(camera_key("cam-6"))).value or b"", type=Lease).pod == "pod-b"
