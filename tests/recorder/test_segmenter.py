"""The segmenter's rules on synthetic packets: cuts, gaps and their causes, duplicates, timestamps, handover."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest

from argus_core.bus.messages import CodecConfig, GapCause, MediaPacket
from argus_recorder.segmenter import NS, Checkpoint, Event, GapFound, Policy, SegmentCut, Segmenter

pytestmark = pytest.mark.no_servers

T0 = 1_763_700_000_000_000_000  # a capture time in 2025, UTC ns
FRAME_NS = 40_000_000
TICKS = 3600  # 40 ms at 90 kHz
CONFIG = CodecConfig(codec="h264", width=640, height=360, extradata=b"\x00\x00\x00\x01\x67\x64")
OTHER = CodecConfig(codec="h264", width=320, height=180, extradata=b"\x00\x00\x00\x01\x67\x42")
NOPTS = -(2**63)


@dataclass
class Cam:
    """Makes the packets of one synthetic camera: frame i is captured at T0 + i * 40 ms, keyframes every `gop`."""

    session: str = "s1"
    gop: int = 50
    seq: int = 0
    frame: int = 0
    config: CodecConfig = CONFIG
    keyframes: bool = True
    sent: list[MediaPacket] = field(default_factory=list)

    def next(self, **override: object) -> MediaPacket:
        i = self.frame
        key = self.keyframes and i % self.gop == 0
        fields: dict[str, object] = {
            "camera": "cam-1",
            "stream": "main",
            "session": self.session,
            "seq": self.seq,
            "pts": i * TICKS,
            "dts": i * TICKS,
            "duration": TICKS,
            "keyframe": key,
            "capture_ns": T0 + i * FRAME_NS,
            "time_trusted": True,
            "data": b"\x00\x00\x00\x01" + i.to_bytes(4, "big"),
            "config": self.config if key else None,
        }
        fields.update(override)
        pkt = MediaPacket(**fields)  # type: ignore[arg-type]
        self.seq += 1
        self.frame += 1
        self.sent.append(pkt)
        return pkt

    def skip(self, frames: int) -> None:
        """Time passes with nothing sent (a stall or an outage)."""
        self.frame += frames


def no_status(camera: str, start: int, end: int) -> tuple[GapCause, str]:
    return "ingest_failover", ""


def make(policy: Policy | None = None, checkpoint: Checkpoint | None = None) -> Segmenter[int]:
    return Segmenter("cam-1", "main", policy or Policy(), no_status, checkpoint)


def feed(seg: Segmenter[int], packets: list[MediaPacket]) -> list[Event[int]]:
    events: list[Event[int]] = []
    for p in packets:
        events += seg.push(p, p.seq)
    return events


def segments(events: list[Event[int]]) -> list[SegmentCut[int]]:
    return [e for e in events if isinstance(e, SegmentCut)]


def gaps(events: list[Event[int]]) -> list[GapFound[int]]:
    return [e for e in events if isinstance(e, GapFound)]


def test_a_steady_stream_is_cut_at_the_first_keyframe_after_the_target_and_segments_are_contiguous() -> None:
    cam = Cam()
    seg = make()
    events = feed(seg, [cam.next() for _ in range(500)])  # 20 s
    events += seg.tick(idle_s=60)
    cuts = segments(events)
    assert [c.frames for c in cuts] == [150, 150, 150, 50]
    assert not gaps(events)
    for a, b in zip(cuts, cuts[1:], strict=False):
        assert a.end_ns == b.start_ns
    assert cuts[0].start_ns == T0
    assert cuts[-1].end_ns == T0 + 500 * FRAME_NS
    assert sum(c.duration_ns for c in cuts) == 500 * FRAME_NS
    assert [c.keyframes for c in cuts] == [3, 3, 3, 1]
    assert all(c.packets[0].keyframe and c.packets[0].dts == 0 for c in cuts)
    assert [c.ack for c in cuts] == [149, 299, 449, 499]
    assert cuts[1].first_seq == 150
    assert cuts[1].last_seq == 299


def test_duplicates_and_redeliveries_are_skipped() -> None:
    cam = Cam()
    seg = make()
    first = [cam.next() for _ in range(200)]
    events = feed(seg, first)
    events += feed(seg, first[100:160])  # a redelivery
    events += feed(seg, [cam.next() for _ in range(200)])
    events += seg.tick(idle_s=60)
    cuts = segments(events)
    assert sum(c.frames for c in cuts) == 400
    assert seg.stats.duplicates == 60
    seqs = [s for c in cuts for s in range(c.first_seq, c.last_seq + 1)]
    assert seqs == list(range(400))


def test_a_session_change_is_a_gap_with_the_status_cause_and_recording_resumes_at_a_keyframe() -> None:
    looked_up: list[tuple[int, int]] = []

    def offline(camera: str, start: int, end: int) -> tuple[GapCause, str]:
        looked_up.append((start, end))
        return "camera_offline", "connection refused"

    seg: Segmenter[int] = Segmenter("cam-1", "main", Policy(), offline)
    a = Cam(session="a")
    events = feed(seg, [a.next() for _ in range(170)])  # 6.8 s, cut at 6 s
    b = Cam(session="b", frame=a.frame + 115)  # 4.6 s later, joining mid-GOP: 15 frames before its keyframe
    events += feed(seg, [b.next() for _ in range(100)])
    events += seg.tick(idle_s=60)
    cuts, holes = segments(events), gaps(events)
    assert [c.frames for c in cuts] == [150, 20, 85]
    assert len(holes) == 1
    hole = holes[0]
    assert hole.cause == "camera_offline"
    assert hole.detail == "connection refused"
    assert hole.start_ns == cuts[1].end_ns == T0 + 170 * FRAME_NS
    assert hole.end_ns == cuts[2].start_ns
    assert cuts[2].session == "b"
    assert cuts[2].packets[0].keyframe
    assert looked_up == [(hole.start_ns, b.sent[0].capture_ns)]
    # Late packets of the old session are dropped, not recorded into a new segment.
    late = feed(seg, [a.next() for _ in range(5)])
    assert not late
    assert seg.stats.stale == 5


def test_a_stream_without_keyframes_is_a_no_keyframe_gap_in_chunks_and_never_a_segment() -> None:
    cam = Cam(keyframes=False)
    seg = make(Policy(no_keyframe_s=4, gap_flush_s=5))
    events = feed(seg, [cam.next() for _ in range(510)])  # 20.4 s
    assert not segments(events)
    holes = gaps(events)
    assert holes
    assert all(g.cause == "no_keyframe" for g in holes)
    assert holes[0].start_ns == T0
    assert all(g.end_ns - g.start_ns == pytest.approx(5 * NS, abs=FRAME_NS) for g in holes)
    for a, b in zip(holes, holes[1:], strict=False):
        assert a.end_ns == b.start_ns
    assert holes[-1].ack is not None
    assert holes[-1].session == "s1"
    # When the stream goes quiet the rest is accounted for too.
    rest = gaps(seg.tick(idle_s=60))
    assert len(rest) == 1
    assert rest[0].end_ns == T0 + 510 * FRAME_NS
    assert rest[0].ack == 509


def test_a_hole_in_seq_ends_the_segment_and_is_a_gap_until_the_next_keyframe() -> None:
    cam = Cam()
    seg = make()
    events = feed(seg, [cam.next() for _ in range(60)])
    cam.seq += 10  # ten packets never reach the recorder
    cam.frame += 10
    events += feed(seg, [cam.next() for _ in range(100)])
    events += seg.tick(idle_s=60)
    cuts, holes = segments(events), gaps(events)
    assert [c.frames for c in cuts] == [60, 70]
    assert len(holes) == 1
    assert holes[0].cause == "unknown"
    assert "10 packet(s) missing" in holes[0].detail
    assert holes[0].start_ns == cuts[0].end_ns
    assert holes[0].end_ns == cuts[1].start_ns == T0 + 100 * FRAME_NS


def test_a_message_that_did_not_decode_makes_the_hole_corrupt_data() -> None:
    cam = Cam()
    seg = make()
    events = feed(seg, [cam.next() for _ in range(60)])
    cam.seq += 1
    cam.frame += 1
    seg.corrupt()
    events += feed(seg, [cam.next() for _ in range(100)])
    holes = gaps(events)
    assert [g.cause for g in holes] == ["corrupt_data"]


def test_a_resolution_change_on_a_keyframe_is_a_boundary_with_a_new_configuration_and_no_gap() -> None:
    cam = Cam()
    seg = make()
    events = feed(seg, [cam.next() for _ in range(75)])
    cam.config = OTHER
    cam.gop = 25  # frame 75 is a keyframe under the new GOP
    events += feed(seg, [cam.next() for _ in range(200)])
    events += seg.tick(idle_s=60)
    cuts = segments(events)
    assert not gaps(events)
    assert cuts[0].frames == 75
    assert cuts[0].config == CONFIG
    assert all(c.config == OTHER for c in cuts[1:])
    assert cuts[0].end_ns == cuts[1].start_ns
    assert sum(c.frames for c in cuts) == 275


def test_corrupt_timestamps_are_repaired_and_every_frame_is_kept() -> None:
    cam = Cam()
    seg = make()
    packets = [cam.next() for _ in range(300)]
    broken = []
    for i, p in enumerate(packets):
        if i == 30:
            p = msgspec.structs.replace(p, dts=NOPTS, pts=NOPTS)
        elif i == 70:
            p = msgspec.structs.replace(p, dts=p.dts - 50 * TICKS, pts=p.pts - 50 * TICKS)
        elif i >= 120:
            # The camera's clock jumps by an hour and carries on from there.
            p = msgspec.structs.replace(p, dts=p.dts + 3600 * 90000, pts=p.pts + 3600 * 90000)
        broken.append(p)
    events = feed(seg, broken)
    events += seg.tick(idle_s=60)
    cuts = segments(events)
    assert sum(c.frames for c in cuts) == 300
    assert not gaps(events)
    assert sum(c.repaired_timestamps for c in cuts) == 4  # 30, 70 and 71 (a one-off glitch), 120
    for c in cuts:
        dts = [p.dts for p in c.packets]
        assert dts == sorted(dts)
        assert len(set(dts)) == len(dts)
        assert all(p.pts >= p.dts for p in c.packets)
    assert sum(c.duration_ns for c in cuts) == pytest.approx(300 * FRAME_NS, abs=FRAME_NS)
    for a, b in zip(cuts, cuts[1:], strict=False):
        assert a.end_ns == b.start_ns


def test_a_stall_is_a_camera_offline_gap() -> None:
    cam = Cam()
    seg = make(Policy(stall_s=3))
    events = feed(seg, [cam.next() for _ in range(60)])
    cam.skip(190)  # 7.6 s with no frame; frame 250 is a keyframe
    events += feed(seg, [cam.next() for _ in range(100)])
    events += seg.tick(idle_s=60)
    cuts, holes = segments(events), gaps(events)
    assert [c.frames for c in cuts] == [60, 100]
    assert [g.cause for g in holes] == ["camera_offline"]
    assert "stalled" in holes[0].detail
    assert holes[0].start_ns == cuts[0].end_ns == T0 + 60 * FRAME_NS
    assert holes[0].end_ns == cuts[1].start_ns == T0 + 250 * FRAME_NS


def test_a_capture_clock_step_at_a_boundary_is_a_clock_jump_gap() -> None:
    cam = Cam()
    seg = make()
    packets = [cam.next() for _ in range(300)]
    moved = [
        p if i < 150 else msgspec.structs.replace(p, capture_ns=p.capture_ns + 5 * NS) for i, p in enumerate(packets)
    ]
    events = feed(seg, moved)
    events += seg.tick(idle_s=60)
    cuts, holes = segments(events), gaps(events)
    assert [g.cause for g in holes] == ["clock_jump"]
    assert holes[0].start_ns == cuts[0].end_ns == T0 + 150 * FRAME_NS
    assert holes[0].end_ns == cuts[1].start_ns == T0 + 150 * FRAME_NS + 5 * NS


def test_handover_stores_complete_gops_and_leaves_the_rest_unacked() -> None:
    cam = Cam()
    seg = make()
    events = feed(seg, [cam.next() for _ in range(260)])  # one 6 s segment, then 4.4 s open
    assert [c.frames for c in segments(events)] == [150]
    rest = seg.handover()
    cuts = segments(rest)
    assert [c.frames for c in cuts] == [100]  # frames 150..249; 250..259 are a partial GOP
    assert cuts[0].ack == 249
    assert cuts[0].end_ns == T0 + 250 * FRAME_NS


def test_a_new_owner_resumes_after_the_checkpoint_without_duplicates_or_gaps() -> None:
    cam = Cam()
    packets = [cam.next() for _ in range(400)]
    first = make()
    stored = segments(feed(first, packets[:300]))
    assert [c.last_seq for c in stored] == [149]
    last = stored[-1]
    second = make(checkpoint=Checkpoint("s1", last.last_seq, last.end_ns))
    events = feed(second, packets)  # the bus redelivers everything after the ack floor, and more
    events += second.tick(idle_s=60)
    cuts = segments(events)
    assert not gaps(events)
    assert cuts[0].first_seq == 150
    assert cuts[0].start_ns == last.end_ns
    assert sum(c.frames for c in cuts) == 250
    assert second.stats.duplicates == 150


def test_packets_that_left_the_bus_before_a_new_owner_came_are_a_recorder_failover_gap() -> None:
    cam = Cam()
    packets = [cam.next() for _ in range(400)]
    second = make(checkpoint=Checkpoint("s1", 149, T0 + 150 * FRAME_NS))
    events = feed(second, packets[200:])
    holes = gaps(events)
    assert [g.cause for g in holes] == ["recorder_failover"]
    assert holes[0].start_ns == T0 + 150 * FRAME_NS
    assert holes[0].end_ns == T0 + 200 * FRAME_NS
