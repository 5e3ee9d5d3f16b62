"""The muxer: real H.264/H.265 in both framings into fMP4 that ffprobe and ffmpeg accept, init segments stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from argus_core.bus.messages import CodecConfig
from argus_recorder.errors import MuxError
from argus_recorder.muxer import MuxPacket, mux_segment, split_init
from argus_recorder.nal import framing, has_parameter_sets, iter_annexb, length_prefixed_to_annexb, to_annexb
from tests.recorder.harness import probe
from tests.recorder.media import Clip, clip, length_prefixed

pytestmark = pytest.mark.no_servers


def packets(c: Clip, start: int, count: int) -> list[MuxPacket]:
    t = c.frame_ticks
    return [
        MuxPacket(
            c.packets[(start + i) % len(c.packets)][0], i * t, i * t, t, c.packets[(start + i) % len(c.packets)][1]
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("name", "make", "codec"),
    [
        ("h264 annex b", lambda: clip(width=320, height=240), "h264"),
        ("h264 avcC", lambda: length_prefixed(clip(width=320, height=240)), "h264"),
        ("h265 annex b", lambda: clip("h265", 320, 240, seconds=2), "hevc"),
        ("h265 hvcC", lambda: length_prefixed(clip("h265", 320, 240, seconds=2)), "hevc"),
    ],
)
def test_segments_probe_and_decode_and_share_one_init_segment(
    name: str, make: object, codec: str, tmp_path: Path
) -> None:
    c: Clip = make()  # type: ignore[operator]
    first = mux_segment(c.config, packets(c, 0, 100))
    second = mux_segment(c.config, packets(c, 50, 75))
    assert first.init == second.init  # it depends on the configuration only
    assert first.init[4:8] == b"ftyp"
    assert first.media[4:8] == b"moof"
    assert b"mfra" not in first.media
    for seg, frames in ((first, 100), (second, 75)):
        path = tmp_path / f"{name}-{frames}.mp4"
        path.write_bytes(seg.init + seg.media)
        found = probe(path)
        assert (found.codec, found.width, found.height, found.packets, found.decode_errors) == (
            codec,
            320,
            240,
            frames,
            "",
        )


def test_a_segment_must_start_with_a_keyframe_and_have_packets() -> None:
    c = clip(width=320, height=240)
    with pytest.raises(MuxError):
        mux_segment(c.config, packets(c, 1, 10))
    with pytest.raises(MuxError):
        mux_segment(c.config, [])


def test_corrupt_configuration_is_a_mux_error_not_a_crash() -> None:
    c = clip(width=320, height=240)
    bad = CodecConfig(codec="h264", width=320, height=240, extradata=b"\x01\x64")
    with pytest.raises(MuxError):
        mux_segment(bad, packets(c, 0, 10))


def test_framing_conversions() -> None:
    c = clip(width=320, height=240)
    lp = length_prefixed(c)
    f = framing("h264", lp.extradata)
    assert f.length_size == 4
    assert has_parameter_sets("h264", f.parameter_sets)
    annexb = to_annexb(f, lp.packets[1][0])
    assert [bytes(u) for u in iter_annexb(annexb)] == [
        bytes(u) for u in iter_annexb(length_prefixed_to_annexb(lp.packets[1][0], 4))
    ]
    assert framing("h264", c.extradata).parameter_sets == c.extradata
    assert framing("h264", b"").parameter_sets == b""
    assert to_annexb(framing("h264", c.extradata), c.packets[0][0]) == c.packets[0][0]


def test_split_init_finds_the_end_of_moov() -> None:
    c = clip(width=320, height=240)
    seg = mux_segment(c.config, packets(c, 0, 50))
    data = seg.init + seg.media
    assert split_init(data) == len(seg.init)
    with pytest.raises(MuxError):
        split_init(seg.media)
