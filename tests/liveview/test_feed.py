"""A feed's side of the live demand, against a real nats-server with this test standing in for ingest: the feed
asks for the current GOP when it starts, renews its demand while it is open and withdraws it when it closes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from fractions import Fraction

import av
import pytest
from nats.aio.msg import Msg

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.codec import decode
from argus_liveview.config import LiveviewSettings
from argus_liveview.feed import FeedHub
from argus_liveview.metrics import Metrics
from tests.ingest.support import eventually

CAMERA = "cam1"
SESSION = "session-1"
FAST = LiveviewSettings(catchup_timeout_s=1.0, demand_interval_s=0.2, demand_ttl_s=1.0, idle_grace_s=0.1)


def encoded(frames: int, *, gop: int, captured_ns: int) -> list[m.MediaPacket]:
    """`frames` pictures of real H.264 (PyAV's libx264: Annex B, the parameter sets only in the extradata, as
    ingest passes on a camera that sends them out of band), a keyframe every `gop`, 25 fps, the first captured at
    `captured_ns`."""
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.gop_size = gop
    enc.flags |= av.codec.context.Flags.global_header
    enc.options = {"tune": "zerolatency", "x264-params": f"annexb=1:keyint={gop}:min-keyint={gop}:scenecut=0"}

    def picture(pts: int) -> av.VideoFrame:
        frame = av.VideoFrame(160, 120, "yuv420p")
        frame.pts = pts
        return frame

    out = [packet for i in range(frames) for packet in enc.encode(picture(i))] + list(enc.encode(None))
    config = m.CodecConfig(codec="h264", width=160, height=120, extradata=bytes(enc.extradata or b""))
    return [
        m.MediaPacket(
            camera=CAMERA,
            stream="main",
            session=SESSION,
            seq=seq,
            pts=seq * 3600,
            dts=seq * 3600,
            duration=3600,
            keyframe=packet.is_keyframe,
            capture_ns=captured_ns + seq * 40_000_000,
            time_trusted=True,
            data=bytes(packet),
            config=config if packet.is_keyframe else None,
        )
        for seq, packet in enumerate(out)
    ]


def decodes(frames: list[bytes]) -> int:
    dec = av.CodecContext.create("h264", "r")
    pictures = 0
    for data in frames:
        pictures += len(dec.decode(av.Packet(data)))
    return pictures + len(dec.decode(None))


class FakeIngest:
    """The pulling ingest pod as far as a feed can tell: it records every demand, answers a catch-up request with
    `catchup` (after publishing `live_first` on the live subject, as the real pod starts publishing at once)."""

    def __init__(self, bus: Bus, catchup: list[m.MediaPacket], live_first: list[m.MediaPacket]) -> None:
        self.bus = bus
        self.catchup = catchup
        self.live_first = live_first
        self.demands: list[m.LiveDemand] = []

    async def on_demand(self, msg: Msg) -> None:
        demand = decode(s.LIVE_DEMAND, msg.data, msg.subject)
        self.demands.append(demand)
        if demand.catchup and msg.reply:
            for packet in self.live_first:
                await self.bus.publish(s.MEDIA, packet, camera=CAMERA, stream="main")
            answer = m.LiveCatchup(
                camera=CAMERA, stream="main", pod="ingest-a", session=SESSION, packets=tuple(self.catchup)
            )
            await self.bus.respond(msg, s.LIVE_CATCHUP, answer)


@pytest.fixture
async def buses(nats_url: str) -> AsyncIterator[tuple[Bus, Bus]]:
    """(liveview's bus, ingest's bus) on the test's own nats-server."""
    liveview = await Bus.connect(nats_url, name="liveview-a")
    ingest = await Bus.connect(nats_url, name="ingest-a")
    try:
        yield liveview, ingest
    finally:
        await liveview.drain()
        await ingest.drain()


async def test_a_feed_catches_up_renews_its_demand_while_open_and_withdraws_it_on_close(
    buses: tuple[Bus, Bus],
) -> None:
    liveview, ingest_bus = buses
    captured = time.time_ns() - 2_000_000_000  # the GOP began 2 s ago
    packets = encoded(8, gop=50, captured_ns=captured)
    assert packets[0].keyframe
    assert not any(p.keyframe for p in packets[1:])
    # The catch-up holds the GOP up to seq 4; seq 3 to 5 also came live (a packet may come both ways).
    ingest = FakeIngest(ingest_bus, catchup=packets[:5], live_first=packets[3:6])
    await ingest_bus.nc.subscribe(s.LIVE_DEMAND.wildcard(), cb=ingest.on_demand)
    await ingest_bus.nc.flush()

    hub = FeedHub(liveview, FAST, Metrics(), viewer="liveview-a")
    try:
        feed = await hub.acquire(CAMERA, "main")
        assert ingest.demands[0] == m.LiveDemand(
            camera=CAMERA, stream="main", viewer="liveview-a", ttl_s=1.0, catchup=True
        )
        # Started from the catch-up's keyframe, joined to the live packets without a repeat or a hole.
        assert [f.seq for f in feed.gop] == [0, 1, 2, 3, 4, 5]
        assert feed.holes == 0
        for packet in packets[6:]:
            await ingest_bus.publish(s.MEDIA, packet, camera=CAMERA, stream="main")
        await eventually(lambda: len(feed.gop) == 8, within_s=5, what="the live packets")
        assert [f.seq for f in feed.gop] == list(range(8))
        assert decodes([f.data for f in feed.gop]) == 8
        # Each caught-up frame says how late it is: it would have arrived live when it was captured.
        late = asyncio.get_running_loop().time() - feed.gop[0].arrived
        assert late == pytest.approx((time.time_ns() - captured) / 1e9, abs=0.3)
        assert feed.gop[1].arrived - feed.gop[0].arrived == pytest.approx(0.04, abs=0.01)

        # Renewed every 0.2 s while open, without asking for a catch-up again.
        before = len(ingest.demands)
        await asyncio.sleep(1.0)
        assert 3 <= len(ingest.demands) - before <= 6, ingest.demands
        renewals = ingest.demands[1:]
        assert all(d == m.LiveDemand(camera=CAMERA, stream="main", viewer="liveview-a", ttl_s=1.0) for d in renewals)

        # Released: after the idle grace the feed closes and withdraws its demand, and renews it no more.
        hub.release(feed)
        await eventually(lambda: feed.closed and ingest.demands[-1].ttl_s == 0, within_s=5, what="withdrawn")
        assert ingest.demands[-1] == m.LiveDemand(camera=CAMERA, stream="main", viewer="liveview-a", ttl_s=0.0)
        asked = len(ingest.demands)
        await asyncio.sleep(0.5)
        assert len(ingest.demands) == asked
        assert len(hub) == 0
    finally:
        await hub.close()


@pytest.mark.parametrize("catchup_timeout_s", [1.0, 0.0])
async def test_without_a_catch_up_the_feed_starts_at_the_next_live_keyframe_and_its_demand_stands(
    buses: tuple[Bus, Bus], catchup_timeout_s: float
) -> None:
    """No ingest pod answers (none pulls the camera yet: no responders), or the feed does not ask: the feed starts
    at once with nothing cached, keeps demanding, and takes the live stream from its next keyframe."""
    liveview, ingest_bus = buses
    settings = LiveviewSettings(catchup_timeout_s=catchup_timeout_s, demand_interval_s=0.2, demand_ttl_s=1.0)
    packets = encoded(14, gop=10, captured_ns=time.time_ns())
    assert [p.seq for p in packets if p.keyframe] == [0, 10]
    ingest = FakeIngest(ingest_bus, catchup=[], live_first=[])
    hub = FeedHub(liveview, settings, Metrics(), viewer="liveview-a")
    try:
        started = time.monotonic()
        feed = await hub.acquire(CAMERA, "main")
        assert time.monotonic() - started < 0.5  # no responders: no waiting for the timeout
        assert feed.gop == []
        # An ingest pod takes the camera and hears the demand at its next renewal.
        await ingest_bus.nc.subscribe(s.LIVE_DEMAND.wildcard(), cb=ingest.on_demand)
        await eventually(lambda: len(ingest.demands) >= 1, within_s=5, what="a renewal")
        assert ingest.demands[0] == m.LiveDemand(camera=CAMERA, stream="main", viewer="liveview-a", ttl_s=1.0)
        for packet in packets[5:]:  # joined mid-GOP
            await ingest_bus.publish(s.MEDIA, packet, camera=CAMERA, stream="main")
        await eventually(lambda: len(feed.gop) == 4, within_s=5, what="the next GOP")
        assert [f.seq for f in feed.gop] == [10, 11, 12, 13]
        hub.release(feed)
    finally:
        await hub.close()  # closes the feed at once (the idle grace is 10 s here)
    await eventually(lambda: ingest.demands[-1].ttl_s == 0, within_s=5, what="withdrawn")


async def test_an_empty_catch_up_and_a_closed_connection_are_no_errors(buses: tuple[Bus, Bus]) -> None:
    """The pulling pod has no GOP to give (not online yet): the feed waits for a live keyframe. Its connection
    closed under it: renewals and the withdrawal fail quietly, and close() may be called twice."""
    liveview, ingest_bus = buses
    ingest = FakeIngest(ingest_bus, catchup=[], live_first=[])
    await ingest_bus.nc.subscribe(s.LIVE_DEMAND.wildcard(), cb=ingest.on_demand)
    await ingest_bus.nc.flush()
    hub = FeedHub(liveview, FAST, Metrics(), viewer="liveview-a")
    try:
        feed = await hub.acquire(CAMERA, "main")
        assert feed.gop == []
        assert ingest.demands[0].catchup
        await liveview.close()
        await asyncio.sleep(0.5)  # renewals fail meanwhile
        hub.release(feed)
        await eventually(lambda: feed.closed, within_s=5, what="the feed closed")
        await feed.close()
    finally:
        await hub.close()
    assert all(d.ttl_s == 1.0 for d in ingest.demands)  # no withdrawal got through
