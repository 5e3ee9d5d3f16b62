"""The recorder's lean pull: everything pending in one burst, nothing invented when nothing is pending, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.js.errors import NotFoundError

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus.jetstream import MEDIA_STREAM, recorder_consumer
from argus_recorder.pull import ConsumerGone, Pull


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="test-pull")
    try:
        await b.ensure(topology(TopologyOptions()))
        yield b
    finally:
        await b.drain()


async def publish(bus: Bus, camera: str, first: int, count: int) -> None:
    for i in range(first, first + count):
        await bus.js.publish(f"argus.record.{camera}.main", str(i).encode())


async def test_fetch_takes_what_is_pending_in_order_and_returns_at_once_when_nothing_is(bus: Bus) -> None:
    spec = recorder_consumer("cam-p")
    await bus.js.add_consumer(MEDIA_STREAM, spec.config())
    pull = Pull(bus.nc, MEDIA_STREAM, spec.durable)
    await pull.start()
    try:
        started = time.monotonic()
        assert await pull.fetch(100, 5.0) == []
        assert time.monotonic() - started < 1.0, "an empty consumer answers at once (no_wait), not at the timeout"

        await publish(bus, "cam-p", 0, 30)
        await publish(bus, "cam-other", 0, 5)  # another camera's media is not this consumer's
        first = await pull.fetch(10, 5.0)
        rest = await pull.fetch(100, 5.0)
        assert [int(m.data) for m in first] == list(range(10))
        assert [int(m.data) for m in rest] == list(range(10, 30))
        assert {m.subject for m in first + rest} == {"argus.record.cam-p.main"}

        # Acking the newest acknowledges all before it (AckAll): nothing is delivered again.
        await rest[-1].ack_sync()
        info = await bus.js.consumer_info(MEDIA_STREAM, spec.durable)
        assert info.num_ack_pending == 0
        await publish(bus, "cam-p", 30, 3)
        assert [int(m.data) for m in await pull.fetch(100, 5.0)] == [30, 31, 32]
    finally:
        await pull.stop()


async def test_fetch_on_a_deleted_consumer_says_it_is_gone_at_once(bus: Bus) -> None:
    spec = recorder_consumer("cam-q")
    await bus.js.add_consumer(MEDIA_STREAM, spec.config())
    pull = Pull(bus.nc, MEDIA_STREAM, spec.durable)
    await pull.start()
    try:
        assert await pull.fetch(10, 2.0) == []
        await bus.js.delete_consumer(MEDIA_STREAM, spec.durable)
        started = time.monotonic()
        with pytest.raises(ConsumerGone, match="consumer not found"):
            await pull.fetch(10, 2.0)
        assert time.monotonic() - started < 4.5  # the silent request times out, then one info request
    finally:
        await pull.stop()


async def test_the_server_deletes_a_consumer_nobody_pulls_from(bus: Bus) -> None:
    assert recorder_consumer("cam-r").config().inactive_threshold == 3600.0  # the default
    spec = recorder_consumer("cam-r", idle_s=1.0)
    await bus.js.add_consumer(MEDIA_STREAM, spec.config())
    pull = Pull(bus.nc, MEDIA_STREAM, spec.durable)
    await pull.start()
    try:
        for _ in range(4):  # pulled from: kept past its threshold
            assert await pull.fetch(10, 1.0) == []
            await asyncio.sleep(0.5)
        assert (await bus.js.consumer_info(MEDIA_STREAM, spec.durable)).config.inactive_threshold == 1.0
    finally:
        await pull.stop()
    deadline = time.monotonic() + 15
    while True:  # then nobody pulls (the camera was removed): the server deletes it on its own timer
        try:
            await bus.js.consumer_info(MEDIA_STREAM, spec.durable)
        except NotFoundError:
            break
        assert time.monotonic() < deadline, "the idle consumer is still there"
        await asyncio.sleep(0.25)
