"""The bus contract against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.errors
import pytest
from nats.js import api

from argus_core.bus import Bus, TopologyOptions, ensure_topology, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_CONSUMER, AUDIT_STREAM, MEDIA_STREAM, PTZ_LEASES_BUCKET
from argus_core.bus.subjects import Subject
from tests.core.samples import SAMPLES, every_subject, sample, tokens_for


async def test_every_subject_round_trips_through_the_server(nats_url: str) -> None:
    pub = await Bus.connect(nats_url, name="pub")
    sub = await Bus.connect(nats_url, name="sub")
    try:
        received: asyncio.Queue[tuple[msgspec.Struct, str]] = asyncio.Queue(maxsize=100)

        async def handler(message: msgspec.Struct, subject: str) -> None:
            received.put_nowait((message, subject))

        pairs = every_subject()
        for subject, _ in pairs:
            await sub.subscribe(subject, handler)
        await sub.nc.flush()
        for subject, message in pairs:
            await pub.publish(subject, message, **tokens_for(subject))
        got = [await asyncio.wait_for(received.get(), 5) for _ in pairs]
        assert sorted((subj, repr(msg)) for msg, subj in got) == sorted(
            (subject.format(**tokens_for(subject)), repr(message)) for subject, message in pairs
        )
    finally:
        await pub.drain()
        await sub.drain()


async def test_a_malformed_message_is_dropped_and_the_next_one_delivered(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, name="t")
    try:
        got: asyncio.Queue[msgspec.Struct] = asyncio.Queue(maxsize=10)

        async def handler(message: msgspec.Struct, subject: str) -> None:
            got.put_nowait(message)

        await bus.subscribe(s.CAMERA_STATUS, handler)
        await bus.nc.publish("argus.camera.status.cam-1", b"{not json")
        good = sample(m.CameraStatus)
        await bus.publish(s.CAMERA_STATUS, good, camera="cam-1")
        assert await asyncio.wait_for(got.get(), 5) == good
    finally:
        await bus.drain()


async def test_persisted_messages_land_in_their_streams_and_duplicates_are_dropped(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, name="t")
    try:
        await bus.ensure(topology())
        media: Subject[Any] = s.RECORD
        ack = await bus.persist(media, SAMPLES[media.type], msg_id="m-1", camera="cam-1", stream="main")
        assert ack.stream == MEDIA_STREAM
        again = await bus.persist(media, SAMPLES[media.type], msg_id="m-1", camera="cam-1", stream="main")
        assert again.duplicate
        packet = msgspec.structs.replace(sample(m.MediaPacket), data=b"\x00" * (5 * 1024 * 1024))
        big = msgspec.structs.replace(sample(m.MediaBatch), packets=(packet,))
        await bus.persist(media, big, camera="cam-1", stream="main")  # a 4K keyframe is several MB
        with pytest.raises((nats.errors.Error, TimeoutError)):  # live media is never stored
            await bus.persist(s.MEDIA, sample(m.MediaPacket), ack_timeout_s=1.0, camera="cam-1", stream="main")
        info = await bus.js.stream_info(MEDIA_STREAM)
        assert info.state.messages == 2
        audit: Subject[Any] = s.AUDIT
        ack = await bus.persist(audit, SAMPLES[audit.type], msg_id="evt-1", service="api")
        assert ack.stream == AUDIT_STREAM
    finally:
        await bus.drain()


async def test_topology_setup_is_idempotent_under_concurrent_starters(nats_url: str) -> None:
    buses = [await Bus.connect(nats_url, name=f"pod-{i}") for i in range(4)]
    try:
        topo = topology()
        for _ in range(3):
            await asyncio.gather(*(ensure_topology(bus.js, topo) for bus in buses))
        js = buses[0].js
        names = {info.config.name for info in await js.streams_info()}
        assert {spec.name for spec in topo.streams} <= names
        consumer = await js.consumer_info(AUDIT_STREAM, AUDIT_CONSUMER)
        assert consumer.config.ack_policy == api.AckPolicy.EXPLICIT
        kv = await js.key_value(PTZ_LEASES_BUCKET)
        await kv.put("cam-1", b"op-7")
        assert (await kv.get("cam-1")).value == b"op-7"
    finally:
        for bus in buses:
            await bus.drain()


async def test_a_changed_declaration_updates_the_existing_stream(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, name="t")
    try:
        await bus.ensure(topology(TopologyOptions(media_max_age_s=60)))
        await bus.persist(s.RECORD, sample(m.MediaBatch), camera="cam-1", stream="main")
        await asyncio.gather(
            bus.ensure(topology(TopologyOptions(media_max_age_s=120))),
            bus.ensure(topology(TopologyOptions(media_max_age_s=120))),
        )
        info = await bus.js.stream_info(MEDIA_STREAM)
        assert info.config.max_age == pytest.approx(120)
        assert info.state.messages == 1  # updating kept what was stored
    finally:
        await bus.drain()
