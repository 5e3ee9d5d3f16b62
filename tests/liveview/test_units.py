"""liveview's parts on their own: bitstream rewriting, the viewer queue's policy, the track's timestamps, ICE choices
and the configuration."""

from __future__ import annotations

import asyncio
import socket
from fractions import Fraction

import av
import pytest
from aiortc import RTCPeerConnection

from argus_core.bitstream import split_annexb
from argus_core.config import load_config
from argus_core.errors import ConfigError
from argus_liveview import bitstream
from argus_liveview.config import Config, LiveviewSettings
from argus_liveview.ice import IcePolicy, interface_addresses
from argus_liveview.viewer import Frame, PassthroughTrack, QueueClosed, ViewerQueue
from argus_liveview.whep import ice_links

SPS = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = b"\x65" + bytes(range(1, 200))
P = b"\x41" + bytes(range(3, 90))
FILLER = b"\x0c" + b"\xff" * 50 + b"\x80"


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def avcc_record(sps: bytes, pps: bytes) -> bytes:
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )


# --- bitstream ----------------------------------------------------------------------------------------------------


def test_annexb_with_parameter_sets_passes_untouched() -> None:
    data = annexb(SPS, PPS, IDR)
    assert bitstream.for_rtp(data, True, (SPS, PPS)) is data
    p = annexb(P)
    assert bitstream.for_rtp(p, False, (SPS, PPS)) is p


def test_avcc_becomes_annexb_and_a_bare_keyframe_gets_the_parameter_sets() -> None:
    params, size = bitstream.config_parameter_sets(avcc_record(SPS, PPS))
    assert params == (SPS, PPS)
    assert size == 4
    assert bitstream.for_rtp(avcc(IDR), True, params, size) == annexb(SPS, PPS, IDR)
    assert bitstream.for_rtp(avcc(P), False, params, size) == annexb(P)
    # Annex B extradata (the SDP's sprop-parameter-sets, as ingest carries it) works alike.
    params_b, _ = bitstream.config_parameter_sets(annexb(SPS, PPS))
    assert bitstream.for_rtp(annexb(IDR), True, params_b) == annexb(SPS, PPS, IDR)


def test_the_configuration_not_the_bytes_says_how_units_are_framed() -> None:
    """A 4-byte length of 256-511 (or of 1) starts like a start code: an avcC stream's unit must still be read as
    length-prefixed."""
    params, size = bitstream.config_parameter_sets(avcc_record(SPS, PPS))
    big = P[:1] + bytes(range(1, 200)) * 2  # a 399-byte slice: its length prefix is 00 00 01 8f
    tiny = b"\x09"  # an access unit delimiter alone: length 00 00 00 01
    for unit in (big, tiny + big):
        data = avcc(*([tiny] if unit is not big else []), big)
        assert bitstream.is_annexb(data), "the bytes look like Annex B"
        out = bitstream.for_rtp(data, False, params, size)
        assert split_annexb(out) == ([tiny] if unit is not big else []) + [big]
    assert bitstream.config_parameter_sets(annexb(SPS, PPS))[1] == 0
    assert bitstream.config_parameter_sets(b"") == ((), 0)


def test_filler_data_is_left_out_unless_asked_to_keep_it() -> None:
    data = annexb(P, FILLER)
    assert bitstream.for_rtp(data, False) == annexb(P)
    assert bitstream.for_rtp(data, False, strip_filler=False) is data


def test_broken_access_units_and_configs_are_refused() -> None:
    with pytest.raises(bitstream.BitstreamError):
        bitstream.for_rtp(b"\x00\x00\x10\x00\x41", False, (), 4)  # a length that runs past the end
    with pytest.raises(bitstream.BitstreamError):
        bitstream.for_rtp(b"\x41\x9a\x00", False)  # an Annex B stream's unit without a start code
    with pytest.raises(bitstream.BitstreamError):
        bitstream.config_parameter_sets(b"\x07garbage")
    with pytest.raises(bitstream.BitstreamError):
        bitstream.config_parameter_sets(avcc_record(SPS, PPS)[:12])


def test_a_real_encoder_keyframe_decodes_after_the_rewrite() -> None:
    """PyAV's libx264 in MP4 mode (AVCC, parameter sets only in extradata): rewritten, FFmpeg's decoder takes it."""
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = 320, 240, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.flags |= av.codec.context.Flags.global_header  # parameter sets out of band, AVCC units
    enc.options = {"tune": "zerolatency", "x264-params": "annexb=0"}
    frame = av.VideoFrame(320, 240, "yuv420p")
    frame.pts = 0
    packets = list(enc.encode(frame)) + list(enc.encode(None))
    params, size = bitstream.config_parameter_sets(bytes(enc.extradata or b""))
    assert params
    data = bitstream.for_rtp(bytes(packets[0]), True, params, size)
    assert bitstream.is_annexb(data)
    dec = av.CodecContext.create("h264", "r")
    frames = dec.decode(av.Packet(data)) + dec.decode(None)
    assert len(frames) == 1


# --- the viewer queue ---------------------------------------------------------------------------------------------


def frame(seq: int, *, key: bool = False, pts_step: int = 3600, arrived: float = 0.0, session: str = "s") -> Frame:
    return Frame(
        data=annexb(IDR if key else P),
        pts=seq * pts_step,
        duration=pts_step,
        keyframe=key,
        session=session,
        seq=seq,
        capture_ns=seq * 40_000_000,
        arrived=arrived,
    )


def gop(start: int, length: int) -> list[Frame]:
    return [frame(start + i, key=i == 0) for i in range(length)]


async def drain(queue: ViewerQueue) -> list[int]:
    out = []
    while len(queue):
        out.append((await queue.get()).seq)
    return out


async def test_a_viewer_starts_at_a_keyframe() -> None:
    drops: list[tuple[int, str]] = []
    queue = ViewerQueue(10, lambda n, why: drops.append((n, why)))
    for f in gop(0, 5)[1:]:  # joined mid-GOP without a cache: P frames are of no use
        queue.push(f)
    assert len(queue) == 0
    queue.push(frame(5, key=True))
    queue.push(frame(6))
    assert await drain(queue) == [5, 6]
    assert drops == [(1, "waiting_keyframe")] * 4


async def test_the_cached_gop_goes_first_even_when_longer_than_the_limit() -> None:
    queue = ViewerQueue(4)
    queue.prime(gop(0, 8))
    queue.push(frame(8))
    queue.push(frame(9))
    assert await drain(queue) == list(range(10))
    assert queue.dropped == 0


async def test_a_slow_viewer_skips_to_the_next_keyframe_and_the_feed_never_waits() -> None:
    slow, fast = ViewerQueue(5), ViewerQueue(5)
    frames = gop(0, 10) + gop(10, 4)
    got_fast = []
    for f in frames:
        slow.push(f)  # nobody reads the slow one
        fast.push(f)
        got_fast.append((await fast.get()).seq)
    assert got_fast == list(range(14))
    # The slow viewer overflowed at the 6th frame: it dropped what waited and took nothing until the keyframe at 10.
    assert await drain(slow) == [10, 11, 12, 13]
    assert slow.skips == 1
    assert slow.dropped == 10


async def test_after_a_hole_the_viewer_waits_for_a_keyframe_but_keeps_what_it_has() -> None:
    queue = ViewerQueue(50)
    for f in gop(0, 3):
        queue.push(f)
    queue.hole()
    queue.push(frame(5))
    queue.push(frame(6, key=True))
    assert await drain(queue) == [0, 1, 2, 6]


async def test_closing_wakes_the_reader() -> None:
    queue = ViewerQueue(5)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.close()
    with pytest.raises(QueueClosed):
        await waiting
    queue.push(frame(0, key=True))
    assert len(queue) == 0


# --- the track ----------------------------------------------------------------------------------------------------


async def test_live_frames_keep_the_camera_timing() -> None:
    queue = ViewerQueue(50)
    track = PassthroughTrack(queue, catchup_speed=8, catchup_after_s=0.08)
    now = asyncio.get_running_loop().time()
    for f in gop(0, 3):
        queue.push(_at(f, now))
    out = [await track.recv() for _ in range(3)]
    assert [p.pts for p in out] == [0, 3600, 7200]
    assert all(p.time_base == Fraction(1, 90000) for p in out)
    assert bytes(out[0]) == annexb(IDR)


def _at(f: Frame, arrived: float) -> Frame:
    return Frame(
        data=f.data,
        pts=f.pts,
        duration=f.duration,
        keyframe=f.keyframe,
        session=f.session,
        seq=f.seq,
        capture_ns=f.capture_ns,
        arrived=arrived,
    )


async def test_late_frames_are_paced_and_their_timestamps_compressed() -> None:
    loop = asyncio.get_running_loop()
    queue = ViewerQueue(100)
    track = PassthroughTrack(queue, catchup_speed=8, catchup_after_s=0.08)
    old = loop.time() - 2.0  # a GOP cached two seconds ago
    queue.prime([_at(f, old + i * 0.04) for i, f in enumerate(gop(0, 25))])
    started = loop.time()
    out = [await track.recv() for _ in range(25)]
    took = loop.time() - started
    steps = [b.pts - a.pts for a, b in zip(out, out[1:], strict=False)]  # type: ignore[operator]
    # 24 steps of 40 ms at 8x: about 120 ms, each step stamped with its real release (about 5 ms, never 40).
    assert 0.1 <= took < 0.5, took
    assert all(90 <= step <= 900 for step in steps), steps
    assert sum(steps) == pytest.approx(took * 90000, rel=0.3)
    # Then a live frame: the camera's own 40 ms step again.
    queue.push(_at(frame(25), loop.time()))
    live = await track.recv()
    assert live.pts is not None
    assert out[-1].pts is not None
    assert live.pts - out[-1].pts == 3600


async def test_a_new_ingest_session_or_a_jump_uses_the_time_that_passed() -> None:
    loop = asyncio.get_running_loop()
    queue = ViewerQueue(10)
    track = PassthroughTrack(queue, catchup_speed=8, catchup_after_s=1.0)
    queue.push(_at(frame(0, key=True), loop.time()))
    first = await track.recv()
    await asyncio.sleep(0.2)
    queue.push(_at(frame(1, key=True, session="other", pts_step=123_456_789), loop.time()))
    second = await track.recv()
    assert first.pts == 0
    assert second.pts is not None
    assert 0.15 * 90000 < second.pts < 0.5 * 90000


# --- ICE ----------------------------------------------------------------------------------------------------------


def test_loopback_only_reaches_loopback() -> None:
    policy = IcePolicy(hosts=("127.0.0.1",))
    assert policy.accepts_remote("127.0.0.1")
    assert policy.accepts_remote("127.0.0.2")
    assert not policy.accepts_remote("192.0.2.2")
    assert not policy.accepts_remote("fd00::2")
    assert not policy.accepts_remote("1f2e3d4c-aaaa-bbbb-cccc-1234567890ab.local")
    offer = "v=0\r\na=candidate:1 1 udp 1 192.0.2.2 4000 typ host\r\na=candidate:2 1 udp 1 127.0.0.1 4001 typ host\r\n"
    kept, dropped = policy.filter_offer(offer)
    assert dropped == 1
    assert "127.0.0.1 4001" in kept
    assert "192.0.2.2" not in kept
    # With an address on a real interface (or a TURN server), everything goes.
    assert IcePolicy(hosts=("0.0.0.0",)).accepts_remote("192.0.2.2")
    assert IcePolicy(hosts=("127.0.0.1",), servers=("turn:127.0.0.1:3478",)).accepts_remote("192.0.2.2")


def _candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def test_gathering_binds_loopback_in_the_port_range() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    low, high = (base, base + 3) if base < 65000 else (base - 3, base)
    policy = IcePolicy(hosts=("127.0.0.1",), port_min=low, port_max=high)
    pcs = [RTCPeerConnection(policy.configuration()) for _ in range(3)]
    try:
        ports = []
        for pc in pcs:
            pc.addTransceiver("video", direction="recvonly")
            policy.install(pc)
            await pc.setLocalDescription(await pc.createOffer())
            assert pc.localDescription is not None
            found = _candidates(pc.localDescription.sdp)
            assert [c[4] for c in found] == ["127.0.0.1"]
            ports.append(int(found[0][5]))
        assert all(low <= p <= high for p in ports)
        assert len(set(ports)) == 3
    finally:
        for pc in pcs:
            await pc.close()


async def test_a_full_port_range_refuses_gathering() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        policy = IcePolicy(hosts=("127.0.0.1",), port_min=port, port_max=port)
        pc = RTCPeerConnection(policy.configuration())
        try:
            pc.addTransceiver("video", direction="recvonly")
            policy.install(pc)
            with pytest.raises(Exception, match="no UDP port could be bound"):
                await pc.setLocalDescription(await pc.createOffer())
        finally:
            await pc.close()


async def test_advertised_addresses_ride_on_the_bound_ports() -> None:
    public = next((a for a in interface_addresses() if ":" not in a and not a.startswith("127.")), None)
    if public is None:
        pytest.skip("this machine has no IPv4 address besides loopback")
    policy = IcePolicy(hosts=("127.0.0.1", public), advertise=("203.0.113.9",))
    pc = RTCPeerConnection(policy.configuration())
    try:
        pc.addTransceiver("video", direction="recvonly")
        policy.install(pc)
        await pc.setLocalDescription(await pc.createOffer())  # binding a socket sends nothing
        assert pc.localDescription is not None
        found = {c[4]: (int(c[5]), int(c[3])) for c in _candidates(pc.localDescription.sdp)}
        assert set(found) == {"127.0.0.1", public, "203.0.113.9"}
        assert found["203.0.113.9"][0] == found[public][0]  # the NAT forwards the same port
        assert found["203.0.113.9"][1] > found[public][1] > found["127.0.0.1"][1]  # preferred, in that order
    finally:
        await pc.close()


def test_no_default_stun_server_and_turn_credentials_pass_through() -> None:
    assert IcePolicy().configuration().iceServers == []
    config = IcePolicy(
        servers=("stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"),
        turn_username="u",
        turn_password="p",
    ).configuration()
    assert config.iceServers is not None
    stun, turn = config.iceServers
    assert stun.username is None
    assert (turn.username, turn.credential) == ("u", "p")
    links = ice_links(("stun:s:3478", "turn:t:3478"), "u", "p")
    assert links[0] == '<stun:s:3478>; rel="ice-server"'
    assert 'username="u"; credential="p"' in links[1]


# --- configuration ------------------------------------------------------------------------------------------------


def test_settings_from_the_environment(tmp_path: object) -> None:
    env = {
        "ARGUS_TOKENS_PUBLIC_KEYS": "/keys/k1.pem",
        "ARGUS_LIVEVIEW_ICE_HOSTS": "127.0.0.1, 10.0.0.5",
        "ARGUS_LIVEVIEW_ICE_ADVERTISE": "203.0.113.9",
        "ARGUS_LIVEVIEW_ICE_PORT_MIN": "40000",
        "ARGUS_LIVEVIEW_ICE_PORT_MAX": "40100",
        "ARGUS_LIVEVIEW_ICE_SERVERS": "stun:stun.example.org:3478",
    }
    config = load_config(Config, {**env, "ARGUS_LIVEVIEW_CATCHUP_TIMEOUT_S": "0", "ARGUS_POD_NAME": "liveview-7"})
    assert config.pod_name == "liveview-7"  # the name its live demands carry
    assert (config.liveview.catchup_timeout_s, config.liveview.demand_interval_s) == (0.0, 2.0)
    assert config.liveview.ice_hosts == ("127.0.0.1", "10.0.0.5")
    assert (config.liveview.ice_port_min, config.liveview.ice_port_max) == (40000, 40100)
    assert LiveviewSettings().ice_hosts == ()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ARGUS_LIVEVIEW_ICE_HOSTS", "not-an-address"),
        ("ARGUS_LIVEVIEW_ICE_PORT_MIN", "40000"),  # without a maximum
        ("ARGUS_LIVEVIEW_ICE_SERVERS", "http://stun.example.org"),
        ("ARGUS_LIVEVIEW_VIEWER_QUEUE_FRAMES", "1"),
        ("ARGUS_LIVEVIEW_CATCHUP_TIMEOUT_S", "11"),
        ("ARGUS_LIVEVIEW_DEMAND_TTL_S", "4"),  # not more than twice the 2 s renewal interval
    ],
)
def test_bad_settings_are_refused_naming_the_setting(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Config, {"ARGUS_TOKENS_PUBLIC_KEYS": "/keys/k1.pem", variable: value})
    assert info.value.variable.startswith("ARGUS_LIVEVIEW")
