"""Keys, fair shares, gap causes from camera status, the spool on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from argus_core.bus.messages import CameraStatus, CodecConfig
from argus_recorder.index import GapRow, SegmentRow
from argus_recorder.keys import init_key, ns_of, segment_key, utc
from argus_recorder.leases import fair_share, rank
from argus_recorder.spool import Spool
from argus_recorder.status import StatusBook

pytestmark = pytest.mark.no_servers

T0 = 1_795_227_245_120_456_789  # 2026-11-21T02:14:05.120456789Z


def test_segment_keys_are_deterministic_and_readable() -> None:
    key = segment_key("cam-01", "main", T0, "s1", 150)
    assert key.startswith("cam-01/2026/11/21/02/14/05.120Z-")
    assert key.endswith(".m4s")
    assert key == segment_key("cam-01", "main", T0, "s1", 150)
    assert key != segment_key("cam-01", "main", T0, "s2", 150)  # a clock stepping back cannot overwrite
    assert segment_key("cam-01", "sub", T0, "s1", 150).startswith("cam-01/sub/2026/")
    config = CodecConfig(codec="h264", width=1280, height=720, extradata=b"\x00\x00\x00\x01\x67")
    same = CodecConfig(codec="h264", width=1280, height=720, extradata=b"\x00\x00\x00\x01\x67")
    assert init_key("cam-01", "main", config) == init_key("cam-01", "main", same)
    assert init_key("cam-01", "main", config) != init_key(
        "cam-01", "main", CodecConfig(codec="h264", width=640, height=360)
    )
    assert ns_of(utc(T0)) == T0 // 1_000_000 * 1_000_000


@pytest.mark.parametrize(("cameras", "pods"), [(0, 1), (4, 2), (10, 3), (100, 7), (3, 5)])
def test_fair_shares_cover_every_camera_and_differ_by_at_most_one(cameras: int, pods: int) -> None:
    names = [f"rec-{i}" for i in range(pods)]
    shares = [fair_share(cameras, names, me) for me in names]
    assert sum(shares) == cameras
    assert max(shares) - min(shares) <= 1


def test_rank_spreads_preferences() -> None:
    cameras = [f"cam-{i}" for i in range(20)]

    def favourite(pod: str) -> str:
        return max(cameras, key=lambda camera: rank(camera, pod))

    assert len({favourite(pod) for pod in ("a", "b", "c", "d")}) > 1
    assert favourite("a") == favourite("a")


def test_gap_cause_from_camera_status() -> None:
    book = StatusBook()
    book.add(CameraStatus(camera="c", state="online", at_ns=100, ingest_pod="i-0"))
    assert book.cause("c", 5_000_000_000, 6_000_000_000) == ("ingest_failover", "")
    book.add(CameraStatus(camera="c", state="offline", at_ns=5_500_000_000, ingest_pod="i-0", error="refused"))
    assert book.cause("c", 5_000_000_000, 6_000_000_000) == ("camera_offline", "camera offline: refused")
    book.add(CameraStatus(camera="c", state="online", at_ns=20_000_000_000, ingest_pod="i-0"))
    book.add(CameraStatus(camera="c", state="online", at_ns=21_000_000_000, ingest_pod="i-1"))
    cause, detail = book.cause("c", 19_000_000_000, 22_000_000_000)
    assert cause == "ingest_failover"
    assert "i-0" in detail
    assert "i-1" in detail


def row(start_s: int, size: int = 0) -> SegmentRow:
    return SegmentRow(
        camera="cam", stream="main", start_ns=start_s * 1_000_000_000, end_ns=(start_s + 6) * 1_000_000_000,
        duration_ms=6000, frames=150, keyframes=3, bytes=size or 1, sha256="00" * 32, codec="h264", width=1,
        height=1, object_key=f"cam/{start_s}.m4s", init_key="cam/init/x.mp4", time_trusted=True, session="s",
        first_seq=start_s, last_seq=start_s + 149, repaired_timestamps=0, recorder="r",
    )  # fmt: skip


def test_the_spool_keeps_the_newest_segments_within_its_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1_000_000)
    assert spool.load().segments == 0
    assert not (tmp_path / "spool").exists()  # made only when first needed
    dropped: list[SegmentRow] = []
    for i in range(6):
        dropped += spool.add_segment(row(i * 6), os.urandom(300_000))
    assert [r.start_ns for r in dropped] == [0, 6_000_000_000, 12_000_000_000]
    state = spool.state()
    assert (state.segments, state.used_bytes) == (3, 900_000)
    assert spool.add_segment(row(100), os.urandom(2_000_000)) == [row(100)]  # larger than the spool: refused
    spool.add_segment(row(200), None)  # only its row waits (it is in S3)
    spool.add_init("cam/init/x.mp4", b"init")
    spool.add_gap(
        GapRow(
            camera="cam",
            stream="main",
            start_ns=1,
            end_ns=2,
            cause="unknown",
            detail="",
            session=None,
            last_seq=None,
            recorder="r",
        )
    )
    # A crash: a half-written item (media without its row) and a temporary file are left behind.
    (tmp_path / "spool" / "seg" / "00000000000000000999-deadbeefdeadbeef.m4s").write_bytes(b"x")
    (tmp_path / "spool" / "tmp" / "junk").write_bytes(b"x")
    again = Spool(tmp_path / "spool", max_bytes=1_000_000)
    state = again.load()
    assert (state.segments, state.rows, state.gaps, state.inits) == (3, 1, 1, 1)
    assert state.used_bytes == 900_004
    assert not (tmp_path / "spool" / "seg" / "00000000000000000999-deadbeefdeadbeef.m4s").exists()
    assert not list((tmp_path / "spool" / "tmp").iterdir())
    items = again.segments()
    assert len(again.read_media(items[0])) == 300_000
    again.mark_uploaded(items[0])
    assert again.state().used_bytes == 600_004
    for item in again.segments():
        again.remove_segment(item)
    for gap in again.gaps():
        again.remove_gap(gap)
    for name, _ in again.inits():
        again.remove_init(name)
    assert again.empty
    assert again.state().used_bytes == 0
