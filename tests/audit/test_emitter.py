"""The shared emitter: events land on the AUDIT stream once, and a short NATS outage loses none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from argus_core.audit.emitter import AuditEmitter, AuditUnavailable, actor_of
from argus_core.bus import Bus, decode, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_STREAM
from argus_core.identity import Grant, Identity
from argus_devstack.pytest_plugin import NatsFactory


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="emitter-test")
    try:
        await bus.ensure(topology())
        yield bus
    finally:
        await bus.close()


async def stored(bus: Bus) -> list[m.AuditEvent]:
    info = await bus.js.stream_info(AUDIT_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(AUDIT_STREAM, seq)
        assert msg.subject is not None
        assert msg.data is not None
        found.append(decode(s.AUDIT, msg.data, msg.subject))
    return found


async def test_an_event_carries_who_what_when_and_why(bus: Bus) -> None:
    identity = Identity(
        subject="pc-1234", roles=("partner",), grants=(Grant(actions=("playback",), cameras=("cam-2",)),)
    )
    emitter = AuditEmitter(bus, "api")
    before = time.time_ns()
    event = await emitter.emit(
        "playback.clip",
        actor=identity,
        client="10.1.2.3 Firefox",
        camera="cam-2",
        footage=(1_000, 2_000),
        reason="theft on High St",
        reference="INC-77",
        details={"format": "hls"},
    )
    assert len(event.id) == 32
    assert before <= event.at_ns <= time.time_ns()
    assert event.actor == m.Actor(subject="pc-1234", roles=("partner",), client="10.1.2.3 Firefox")
    (found,) = await stored(bus)
    assert found == event
    msg = await bus.js.get_msg(AUDIT_STREAM, 1)
    assert msg.subject == "argus.audit.api"
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == event.id


async def test_a_retried_event_is_stored_once_on_the_stream(bus: Bus) -> None:
    emitter = AuditEmitter(bus, "retention")
    event = emitter.event("retention.sweep", actor="retention", details={"segments": "12"})
    assert event.actor == actor_of("retention") == m.Actor(subject="service:retention", roles=("service",))
    await emitter.persist(event)
    await emitter.persist(event)
    assert await stored(bus) == [event]


async def test_a_service_name_that_is_not_a_subject_token_is_refused(bus: Bus) -> None:
    with pytest.raises(ValueError, match="plain subject token"):
        AuditEmitter(bus, "api.v2")


@pytest.mark.slow
async def test_a_short_nats_outage_loses_no_event(nats_factory: NatsFactory) -> None:
    server = nats_factory()
    bus = await Bus.connect(server.url, name="emitter-outage")
    try:
        await bus.ensure(topology())
        emitter = AuditEmitter(bus, "ptz", retry_for_s=30, ack_timeout_s=1)
        first = await emitter.emit("ptz.move", actor="ptz", camera="cam-1")
        await asyncio.to_thread(server.stop)
        during = [asyncio.create_task(emitter.emit("ptz.move", actor="ptz", camera=f"cam-{i}")) for i in range(2, 12)]
        await asyncio.sleep(2.0)
        assert not any(t.done() for t in during)  # waiting, not failing
        await asyncio.to_thread(server.start)
        sent = await asyncio.wait_for(asyncio.gather(*during), 30)
        assert emitter.retries > 0
        found = await stored(bus)
        assert sorted(e.id for e in found) == sorted([first.id] + [e.id for e in sent])
    finally:
        await bus.close()


async def test_an_outage_longer_than_the_budget_raises(nats_factory: NatsFactory) -> None:
    server = nats_factory()
    bus = await Bus.connect(server.url, name="emitter-budget")
    try:
        await bus.ensure(topology())
        await asyncio.to_thread(server.stop)
        emitter = AuditEmitter(bus, "api", retry_for_s=1.0, ack_timeout_s=0.3)
        with pytest.raises(AuditUnavailable) as failed:
            await emitter.emit("live.view.start", actor="api", camera="cam-1")
        assert failed.value.event.action == "live.view.start"
        await asyncio.to_thread(server.start)  # nats-py cannot close cleanly while it is reconnecting
        for _ in range(200):
            if bus.connected:
                break
            await asyncio.sleep(0.1)
    finally:
        await bus.close()
