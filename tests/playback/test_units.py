"""Pieces of playback on their own: the tfdt patcher, the playlist plan, ranges, signed URLs, the timeline."""

from __future__ import annotations

import random
import struct

import pytest

from argus_api.playback import fmp4, hls
from argus_api.playback.delivery import ByteRange, Unsatisfiable, parse_range
from argus_api.playback.index import Gap, Segment, Span, iso
from argus_api.playback.timeline import build_timeline
from tests.playback.media import stock_segment


@pytest.fixture(scope="module")
def segment_bytes() -> tuple[bytes, bytes]:
    stock = stock_segment("h264")
    return stock.muxed.init, stock.muxed.media


def tfdts(media: bytes) -> list[int]:
    out = []
    for moof in fmp4.boxes(media):
        if moof.kind != b"moof":
            continue
        tfdt = fmp4.find(media, (b"traf", b"tfdt"), moof.body, moof.end)
        assert media[tfdt.body] == 1
        out.append(struct.unpack_from(">Q", media, tfdt.body + 4)[0])
    return out


def test_the_patcher_moves_every_fragment_and_nothing_else(segment_bytes: tuple[bytes, bytes]) -> None:
    init, media = segment_bytes
    assert fmp4.timescale(init) == 90_000
    before = tfdts(media)
    assert before[0] == 0
    assert len(before) == 3  # a fragment per GOP: 6 s of 2 s GOPs
    patched = fmp4.patch_tfdt(media, 123_456_789)
    assert len(patched) == len(media)
    assert tfdts(patched) == [123_456_789 + t for t in before]
    assert [i for i, (a, b) in enumerate(zip(media, patched, strict=True)) if a != b] != []
    assert sum(a != b for a, b in zip(media, patched, strict=True)) <= 3 * 8  # only the tfdt values changed


def test_the_patcher_gives_the_same_bytes_however_the_stream_is_cut(segment_bytes: tuple[bytes, bytes]) -> None:
    _, media = segment_bytes
    whole = fmp4.patch_tfdt(media, 10**12)
    rng = random.Random(5)
    for _ in range(30):
        patcher = fmp4.TfdtPatcher(10**12)
        cuts = sorted(rng.sample(range(1, len(media)), rng.randrange(1, 60)))
        pieces = [media[a:b] for a, b in zip([0, *cuts], [*cuts, len(media)], strict=True)]
        out = b"".join(patcher.feed(p) for p in pieces)
        patcher.finish()
        assert out == whole
    one_byte = fmp4.TfdtPatcher(7)
    assert b"".join(one_byte.feed(media[i : i + 1]) for i in range(len(media))) == fmp4.patch_tfdt(media, 7)
    truncated = fmp4.TfdtPatcher(0)
    truncated.feed(media[:-10])
    with pytest.raises(fmp4.BoxError):
        truncated.finish()
    with pytest.raises(fmp4.BoxError):
        fmp4.timescale(media)


def seg(start: int, end: int, init: str = "i1", key: str = "") -> Segment:
    return Segment(start, end, end - start, 30, 1000, key or f"k{start}", init, "h264", 320, 180)


def test_the_plan_marks_gaps_init_changes_and_overlaps() -> None:
    segments = [
        seg(0, 6000),
        seg(6000, 12_000),
        seg(12_050, 18_050),  # 50 ms late: within the tolerance, follows on
        seg(30_000, 36_000),  # a gap
        seg(36_000, 42_000, "i2"),  # a new init
        seg(41_000, 47_000, "i2"),  # starts before the previous one ended
    ]
    entries = hls.plan(segments, tolerance_ms=100, restart_every_segment=False)
    assert [e.discontinuity for e in entries] == ["", "", "", "gap", "init", "overlap"]
    assert [e.new_init for e in entries] == [True, False, False, False, True, False]
    assert [e.position_ms for e in entries] == [0, 6000, 12_000, 18_000, 24_000, 30_000]
    restarted = hls.plan(segments[:3], tolerance_ms=100, restart_every_segment=True)
    assert [e.discontinuity for e in restarted] == ["", "restart", "restart"]
    text = hls.render(entries, media_uri=lambda e: e.segment.object_key, init_uri=lambda e: e.segment.init_key,
                      start_offset_ms=7_250)  # fmt: skip
    assert "#EXT-X-TARGETDURATION:6\n" in text
    assert "#EXT-X-START:TIME-OFFSET=7.250,PRECISE=YES\n" in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 3
    assert text.count("#EXT-X-MAP:") == 2
    assert hls.position_of(entries, 20_000) == 18_000  # in the gap: where the next footage starts
    assert hls.position_of(entries, 7_000) == 7_000
    assert hls.position_of(entries, 99_000) is None


def test_ranges() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 10)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 100)
    assert parse_range("bytes=90-200", 100) == ByteRange(90, 100)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 100)
    assert parse_range("bytes=-1000", 100) == ByteRange(0, 100)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole object
    assert parse_range("items=0-1", 100) is None
    for bad in ("bytes=100-", "bytes=5-4", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(bad, 100)


def test_signed_urls_carry_exactly_what_they_grant() -> None:
    now = [1_000_000.0]
    signer = hls.UrlSigner(b"k" * 32, ttl_s=60, clock=lambda: now[0])
    grant = hls.SegmentGrant("cam-1/2026/x.m4s", "cam-1/init/a.mp4", 6000, signer.expiry(), 1234)
    url = signer.url(grant)
    path, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    params["i"] = params["i"].replace("%2F", "/")
    assert signer.verify(path.removeprefix(hls.SEGMENT_PATH), params) == grant
    for name, value in (("o", "0"), ("n", "99999"), ("e", str(grant.expires + 3600))):
        with pytest.raises(hls.BadSignature):
            signer.verify(grant.key, {**params, name: value})
    with pytest.raises(hls.BadSignature):
        signer.verify("cam-2/2026/x.m4s", params)
    with pytest.raises(hls.BadSignature):
        hls.UrlSigner(b"x" * 32, ttl_s=60, clock=lambda: now[0]).verify(grant.key, params)
    now[0] += 61
    with pytest.raises(hls.BadSignature, match="expired"):
        signer.verify(grant.key, params)


def test_the_timeline_explains_holes_with_gap_rows_where_it_can() -> None:
    spans = [Span(0, 10_000, 2), Span(20_000, 30_000, 2), Span(40_000, 50_000, 2)]
    gaps = [Gap(10_000, 15_000, "camera_offline", "")]
    body = build_timeline("c", "main", 5_000, 45_000, spans, gaps)
    assert [(s["start"], s["end"]) for s in body["spans"]] == [
        (iso(5_000), iso(10_000)),
        (iso(20_000), iso(30_000)),
        (iso(40_000), iso(45_000)),
    ]
    assert [(g["start"], g["end"], g["cause"]) for g in body["gaps"]] == [
        (iso(10_000), iso(15_000), "camera_offline"),
        (iso(15_000), iso(20_000), "unknown"),
        (iso(30_000), iso(40_000), "unknown"),
    ]
    assert body["recorded_s"] == 20.0


def test_presigned_urls_are_the_ones_minio_makes() -> None:
    from datetime import UTC, datetime, timedelta

    from minio import Minio

    from argus_api.playback.delivery import Presigner
    from argus_core.storage import S3Config

    config = S3Config(endpoint="127.0.0.1:9000", access_key="AKIA-test", secret_key="s3cr3t/+key", region="eu-west-2")
    when = datetime(2026, 3, 9, 2, 14, 5, tzinfo=UTC)
    keys = ["cam-1/2026/03/09/02/14/05.120Z-3fa2c1.m4s", "cam-1/init/9c1d0e2f4a6b8c0d.mp4", "cam 2/odd+key~é.m4s"]
    ours = Presigner(config, endpoint="cctv.example.org:9443", secure=True).sign(keys, 3600, now=when)
    theirs = Minio("cctv.example.org:9443", access_key="AKIA-test", secret_key="s3cr3t/+key", secure=True,
                   region="eu-west-2")  # fmt: skip
    for key, url in zip(keys, ours, strict=True):
        expected = theirs.presigned_get_object(config.recordings_bucket, key, timedelta(hours=1), request_date=when)
        assert url == expected


def test_times_are_iso_with_a_zone_or_epoch_seconds() -> None:
    from argus_api.playback.common import time_ms
    from argus_core.http import Problem

    t0 = 1_773_021_600_000  # 2026-03-09T02:00:00Z
    for text in ("2026-03-09T02:00:00Z", "2026-03-09T02:00:00.000z", "2026-03-09T03:00:00+01:00",
                 "2026-03-09T03:00:00 01:00", "1773021600", "1773021600.000"):  # fmt: skip
        assert time_ms("from", text) == t0, text
    assert time_ms("from", "2026-03-09T02:00:00.123Z") == t0 + 123
    for bad in ("2026-03-09T02:00:00", "yesterday", "nan", "inf", "-5", "1e300"):
        with pytest.raises(Problem):
            time_ms("from", bad)
