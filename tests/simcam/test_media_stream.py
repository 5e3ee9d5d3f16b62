"""StreamSource fan-out: GOP start, bounded queues that drop to the next keyframe, NAL faults, RTP packetising."""

from __future__ import annotations

import asyncio
import random

import pytest

from argus_simcam.rtp import RtpPacketizer, h264_payloads, h265_payloads
from argus_simcam.stream import AccessUnit, RtpTail, StreamClosed, StreamSource, StreamSpec
from tests.simcam.rtsp_client import Depacketizer, RtpPacket

SPEC = StreamSpec(640, 360)


def _au(n: int, *, key: bool = False) -> AccessUnit:
    slice_nal = bytes((0x65 if key else 0x41,)) + n.to_bytes(4, "big") * 10
    nals = (b"\x67\x64\x00\x1f", b"\x68\xee\x3c\x80", slice_nal) if key else (slice_nal,)
    return AccessUnit(nals, n * 3600, 1_000_000_000 * n, key)


async def test_subscription_starts_with_current_gop() -> None:
    source = StreamSource("c", "main", "h264", SPEC)
    for n in range(3):
        source.publish(_au(n))  # no keyframe yet: not kept
    for n in range(3, 8):
        source.publish(_au(n, key=n == 3))
    sub = source.subscribe()
    got = [await sub.next() for _ in range(5)]
    assert [au.pts // 3600 for au in got] == [3, 4, 5, 6, 7]
    assert got[0].keyframe
    source.publish(_au(8))
    assert (await sub.next()).pts == 8 * 3600
    sub.close()
    source.close()


async def test_slow_consumer_drops_to_next_keyframe_and_never_blocks_others() -> None:
    source = StreamSource("c", "main", "h264", SPEC)
    slow = source.subscribe(maxsize=4)
    fast = source.subscribe(maxsize=4)
    received: list[int] = []
    for n in range(30):
        source.publish(_au(n, key=n % 10 == 0))
        received.append((await fast.next()).pts // 3600)  # the fast one keeps up
    assert received == list(range(30))
    assert slow.overflows == 3  # at frames 4, 14 and 24
    assert slow.pending() == 0  # waiting for a keyframe
    source.publish(_au(30))
    source.publish(_au(31, key=True))
    first = await slow.next()
    assert first.keyframe
    assert first.pts // 3600 == 31
    source.close()
    with pytest.raises(StreamClosed):
        await slow.next()


async def test_nal_faults() -> None:
    rate = {"drop": 1.0, "corrupt": 0.0}
    source = StreamSource(
        "c",
        "main",
        "h264",
        SPEC,
        drop_rate=lambda: rate["drop"],
        corrupt_rate=lambda: rate["corrupt"],
        rng=random.Random(1),
    )
    sub = source.subscribe()
    source.publish(_au(0, key=True))
    dropped = await sub.next()
    assert [n[0] & 0x1F for n in dropped.nals] == [7, 8]  # parameter sets kept, the slice gone
    rate.update(drop=0.0, corrupt=1.0)
    original = _au(1)
    source.publish(original)
    corrupted = await sub.next()
    assert len(corrupted.nals) == 1
    assert corrupted.nals[0][0] == original.nals[0][0]  # NAL header kept
    assert corrupted.nals[0] != original.nals[0]
    source.close()


async def test_close_wakes_waiters() -> None:
    source = StreamSource("c", "main", "h264", SPEC)
    sub = source.subscribe()
    waiter = asyncio.get_running_loop().create_task(sub.next())
    await asyncio.sleep(0)
    source.close()
    with pytest.raises(StreamClosed):
        await waiter


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_packetize_round_trip(codec: str) -> None:
    rng = random.Random(2)
    if codec == "h264":
        nals = [
            bytes((0x67,)) + rng.randbytes(20),
            bytes((0x68,)) + rng.randbytes(4),
            bytes((0x65,)) + rng.randbytes(5000),
        ]
        nals += [bytes((0x41,)) + rng.randbytes(rng.randrange(10, 300)) for _ in range(12)]
    else:
        nals = [bytes((0x40, 0x01)) + rng.randbytes(20), bytes((0x42, 0x01)) + rng.randbytes(30)]
        nals += [bytes((0x26, 0x01)) + rng.randbytes(4000)]
        nals += [bytes((0x02, 0x01)) + rng.randbytes(rng.randrange(10, 300)) for _ in range(12)]
    au = AccessUnit(tuple(nals), 90_000, 0, True)
    packetizer = RtpPacketizer("h264" if codec == "h264" else "h265", ssrc=7, seq=65534, timestamp_offset=5)
    packets = [RtpPacket.parse(p, 0.0) for p in packetizer.packets(au)]
    assert all(len(p.payload) + 12 <= 1400 for p in packets)
    assert [p.marker for p in packets] == [False] * (len(packets) - 1) + [True]
    assert [p.seq for p in packets[:3]] == [65534, 65535, 0]
    assert {p.timestamp for p in packets} == {90_005}
    depack = Depacketizer(codec)
    out = [depack.push(p) for p in packets]
    assert out[-1] == nals
    assert len(packets) < len(nals)  # small NAL units were aggregated
    # Pre-made payloads for the tail give the same packets.
    split = 2
    maker = h264_payloads if codec == "h264" else h265_payloads
    tail = RtpTail(split, 1388, tuple(maker(nals[split:], 1388)))
    hinted = AccessUnit(tuple(nals), 90_000, 0, True, tail)
    again = RtpPacketizer("h264" if codec == "h264" else "h265", ssrc=7, seq=65534, timestamp_offset=5)
    depack2 = Depacketizer(codec)
    result = [depack2.push(RtpPacket.parse(p, 0.0)) for p in again.packets(hinted)]
    assert result[-1] == nals
    interleaved = RtpPacketizer("h264" if codec == "h264" else "h265", ssrc=7, seq=1, timestamp_offset=5)
    framed = interleaved.interleaved(au, 4)
    assert framed[0] == 0x24
    assert framed[1] == 4
    assert interleaved.packet_count == len(packets)
