"""Live view's side of ingest: packets on the live subject only while demanded, and the current GOP on request."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.aio.msg import Msg
from nats.js import api

from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.codec import decode, encode
from argus_core.bus.jetstream import MEDIA_STREAM
from tests.ingest.support import FAST, World, eventually, world
from tests.simcam.media_env import SMALL, CameraDef, simcam

pytestmark = pytest.mark.slow

CAM = "live-1"


async def live_packets(w: World) -> tuple[list[m.MediaPacket], list[float]]:
    """Packets arriving on the camera's live subject, with their arrival times (monotonic)."""
    got: list[m.MediaPacket] = []
    times: list[float] = []

    async def on_packet(packet: m.MediaPacket, subject: str) -> None:
        got.append(packet)
        times.append(time.monotonic())

    await w.bus.subscribe(s.MEDIA, on_packet, pending_msgs_limit=100_000, camera=CAM, stream="main")
    return got, times


async def demand(w: World, *, viewer: str = "lv-1", ttl_s: float = 10.0) -> None:
    message = m.LiveDemand(camera=CAM, stream="main", viewer=viewer, ttl_s=ttl_s)
    await w.bus.publish(s.LIVE_DEMAND, message, camera=CAM, stream="main")
    await w.bus.nc.flush()


async def catchup(w: World, *, viewer: str = "lv-1", ttl_s: float = 10.0) -> m.LiveCatchup:
    message = m.LiveDemand(camera=CAM, stream="main", viewer=viewer, ttl_s=ttl_s, catchup=True)
    reply: Msg = await w.bus.nc.request(
        s.LIVE_DEMAND.format(camera=CAM, stream="main"), encode(s.LIVE_DEMAND, message), timeout=2.0
    )
    return decode(s.LIVE_CATCHUP, reply.data, reply.subject)


async def test_live_packets_flow_only_while_demanded_and_a_catchup_joins_them_without_a_gap(
    nats_url: str, database_url: str
) -> None:
    async with simcam({CAM: CameraDef(main=SMALL, sub=None)}) as env, world(nats_url, database_url) as w:
        live, arrivals = await live_packets(w)
        await w.add_camera(CAM, env.url(CAM))
        await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of(CAM)) > 60, within_s=20, what="recording batches")
        await asyncio.sleep(1.0)
        assert live == [], "nobody asked: nothing on the live subject"

        # The first viewer: the GOP so far at once, then every packet after it live, in order, none missing.
        answer = await catchup(w)
        assert answer.pod == "pod-a"
        assert answer.packets, "the camera is online: there is a current GOP"
        assert answer.packets[0].keyframe
        assert {p.session for p in answer.packets} == {answer.session}
        seqs = [p.seq for p in answer.packets]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        await eventually(lambda: len(live) > 50, within_s=10, what="live packets")
        joined = {p.seq for p in answer.packets} | {p.seq for p in live if p.session == answer.session}
        assert set(range(seqs[0], max(joined) + 1)) <= joined, "no packet falls between the catch-up and live"
        recorded = {(p.session, p.seq): p for p in w.seen.of(CAM)}
        for packet in live[:20]:
            assert recorded.get((packet.session, packet.seq), packet) == packet  # the same packets as recorded

        # A second viewer pod asks too; the first withdraws: packets keep coming for the second.
        await demand(w, viewer="lv-2", ttl_s=1.5)
        await demand(w, viewer="lv-1", ttl_s=0)
        await asyncio.sleep(0.5)
        count = len(live)
        await asyncio.sleep(0.5)
        assert len(live) > count, "lv-2 still wants it"
        # lv-2's demand runs out (it did not renew): the live subject goes quiet.
        await asyncio.sleep(1.5)
        count = len(live)
        await asyncio.sleep(1.0)
        assert len(live) == count, "every demand ran out"
        # Recording went on throughout, every packet of the session in its batches.
        packets = [p for p in w.seen.of(CAM) if p.session == answer.session]
        assert [p.seq for p in packets] == list(range(packets[0].seq, packets[0].seq + len(packets)))


async def test_a_demand_made_before_a_pod_takes_the_camera_is_served_from_its_first_packet(
    nats_url: str, database_url: str
) -> None:
    async with simcam({CAM: CameraDef(main=SMALL, sub=None)}) as env, world(nats_url, database_url) as w:
        live, _ = await live_packets(w)
        await w.add_camera(CAM, env.url(CAM))
        first = await w.start_pod("pod-a")

        async def renew() -> None:  # as a live view pod does, so that pods that start later hear it too
            while True:
                await demand(w, ttl_s=5.0)
                await asyncio.sleep(1.0)

        renewing = asyncio.create_task(renew())
        await eventually(lambda: len(live) > 10, within_s=20, what="live packets from pod-a")
        # pod-a hands the camera over; pod-b heard the same demand and serves the watcher at once.
        await w.start_pod("pod-b")
        await asyncio.sleep(1.5)
        await w.stop_pod("pod-a")
        assert first.held == frozenset()
        await eventually(lambda: "pod-b" in w.holders().values(), within_s=20, what="pod-b pulls")
        sessions = list(dict.fromkeys(p.session for p in live))
        await eventually(
            lambda: len(dict.fromkeys(p.session for p in live)) > len(sessions), within_s=20, what="pod-b live"
        )
        new = [p for p in live if p.session not in sessions]
        assert new[0].keyframe, "pod-b's session, live from its first packet"
        assert new[0].seq == 0
        renewing.cancel()


async def test_a_catchup_for_a_camera_nobody_pulls_gets_no_answer_and_a_bad_demand_is_ignored(
    nats_url: str, database_url: str
) -> None:
    async with world(nats_url, database_url) as w:
        await w.start_pod("pod-a")
        await w.bus.nc.publish(s.LIVE_DEMAND.format(camera=CAM, stream="main"), b'{"camera": 5}')
        with pytest.raises(Exception, match="(?i)no responders|timeout"):
            await catchup(w)
        assert w.pods["pod-a"][0].live.watched() == 0


async def test_a_stream_pulled_but_not_recorded_goes_on_the_bus_only_live_while_watched(
    nats_url: str, database_url: str
) -> None:
    # A sub stream pulled for control-room tiles, with record_streams left at its default (main).
    settings = msgspec.structs.replace(FAST, streams=("main", "sub"))
    assert settings.record_streams == ("main",)
    sub: list[m.MediaPacket] = []

    async def on_sub(packet: m.MediaPacket, subject: str) -> None:
        sub.append(packet)

    async with simcam({CAM: CameraDef(main=SMALL, sub=SMALL)}) as env, world(nats_url, database_url) as w:
        await w.bus.subscribe(s.MEDIA, on_sub, pending_msgs_limit=100_000, camera=CAM, stream="sub")
        await w.add_camera(CAM, env.url(CAM), sub_url=env.url(CAM, "sub"))
        await w.start_pod("pod-a", settings)
        await eventually(lambda: len(w.seen.of(CAM)) > 60, within_s=20, what="main's recording batches")
        await asyncio.sleep(1.0)
        assert w.seen.of(CAM, "sub") == [], "sub is not stored for recording"
        info = await w.bus.js.stream_info(MEDIA_STREAM, subjects_filter=f"argus.record.{CAM}.>")
        assert isinstance(info.state, api.StreamState)
        assert set(info.state.subjects or {}) == {f"argus.record.{CAM}.main"}
        assert sub == [], "nobody watches sub: nothing live either"

        # A live view pod watches the sub stream: its GOP so far, then its packets live.
        ask = m.LiveDemand(camera=CAM, stream="sub", viewer="lv-1", ttl_s=10.0, catchup=True)
        reply: Msg = await w.bus.nc.request(
            s.LIVE_DEMAND.format(camera=CAM, stream="sub"), encode(s.LIVE_DEMAND, ask), timeout=2.0
        )
        answer = decode(s.LIVE_CATCHUP, reply.data, reply.subject)
        assert answer.packets
        assert answer.packets[0].keyframe
        assert {(p.camera, p.stream) for p in answer.packets} == {(CAM, "sub")}
        await eventually(lambda: len(sub) > 25, within_s=10, what="sub's live packets")
        assert w.seen.of(CAM, "sub") == []
