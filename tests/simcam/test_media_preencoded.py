"""Pre-encoded clips with a per-camera timecode slice: valid H.264 (ffmpeg), exact timecodes, no drift."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from argus_simcam import h264
from argus_simcam.preencoded import Clip, ClipKey, PreencodedStream, TextMacroblocks, encode_clip
from argus_simcam.rtp import max_payload_for
from argus_simcam.scene import Panorama
from argus_simcam.stream import AccessUnit, FrameClock, StreamSpec
from argus_simcam.timecode import STRIP_HEIGHT, read_timecode

FPS = 25
WALL0 = 1_753_000_000_000 * 1_000_000  # ms-aligned, in ns


def _write_annexb(path: Path, units: list[AccessUnit]) -> None:
    with path.open("wb") as out:
        for au in units:
            for nal in au.nals:
                out.write(b"\x00\x00\x00\x01" + nal)


def _decode(path: Path) -> list[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as container:
        return [np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8) for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip_640() -> Clip:
    key = ClipKey.for_spec("h264", StreamSpec(640, 360, FPS, 600_000, gop_s=1.0), loop_s=2.0)
    return encode_clip(key, Panorama.build(), max_payload_for(1400))


def test_bit_reader_writer_round_trip() -> None:
    rng = random.Random(5)
    values = [rng.randrange(0, 5000) for _ in range(200)]
    signed = [rng.randrange(-3000, 3000) for _ in range(200)]
    w = h264.BitWriter()
    for u, s in zip(values, signed, strict=True):
        w.ue(u)
        w.se(s)
        w.u(u & 0x1F, 5)
    w.trailing_bits()
    r = h264.BitReader(w.getvalue())
    for u, s in zip(values, signed, strict=True):
        assert r.ue() == u
        assert r.se() == s
        assert r.u(5) == u & 0x1F
    assert not r.more_rbsp_data()


def test_emulation_prevention_round_trip() -> None:
    rng = random.Random(9)
    for _ in range(200):
        raw = bytes(rng.choice((0, 0, 0, 1, 2, 3, 7)) for _ in range(rng.randrange(1, 40))) + b"\x80"
        escaped = h264.escape_rbsp(raw)
        assert b"\x00\x00\x00" not in escaped
        assert b"\x00\x00\x01" not in escaped
        assert b"\x00\x00\x02" not in escaped
        assert h264.unescape_rbsp(escaped) == raw


@pytest.mark.slow
def test_spliced_stream_decodes_cleanly_with_exact_timecodes(clip_640: Clip, tmp_path: Path) -> None:
    """Two cameras on the same clip: ffmpeg finds no error, every frame's timecode is its capture time, and the
    picture below the strip is identical between the cameras (no motion vector reaches into the strip)."""
    clock = FrameClock(FPS, 0, WALL0)
    text = TextMacroblocks()
    streams = [
        PreencodedStream(clip_640, "NORTH GATE", clock, lambda: 0, text, phase=7),
        PreencodedStream(clip_640, "SOUTH 2", clock, lambda: 3_600_123_000_000, text, phase=7),
    ]
    n0 = 1000
    frames = 3 * clip_640.key.frames  # loop the clip three times
    decoded = []
    for i, stream in enumerate(streams):
        start = stream.keyframe_at_or_before(n0)
        units = [stream.make(n) for n in range(start, start + frames)]
        assert units[0].keyframe
        path = tmp_path / f"cam{i}.h264"
        _write_annexb(path, units)
        result = subprocess.run(
            ["/usr/bin/ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0
        assert result.stderr == ""
        pictures = _decode(path)
        assert len(pictures) == frames
        times = [read_timecode(p[:360]) or 0 for p in pictures]
        assert times == [u.capture_ns // 1_000_000 for u in units]
        assert all(b - a == 40 for a, b in zip(times, times[1:], strict=False))
        decoded.append(pictures)
    for a, b in zip(*decoded, strict=True):
        assert np.array_equal(a[STRIP_HEIGHT:360], b[STRIP_HEIGHT:360])
        assert not np.array_equal(a[:STRIP_HEIGHT], b[:STRIP_HEIGHT])


def test_clip_is_checked_for_drift(clip_640: Clip) -> None:
    assert clip_640.drift_frames == 0
    assert clip_640.timecode
    assert clip_640.key.frames == 50
    assert sum(f.keyframe for f in clip_640.frames) == 2


def test_catch_up_starts_at_a_keyframe(clip_640: Clip) -> None:
    clock = FrameClock(FPS, 0, WALL0)
    stream = PreencodedStream(clip_640, "X", clock, lambda: 0, TextMacroblocks(), phase=3)
    units = stream.catch_up(1234)
    assert units[0].keyframe
    assert not any(u.keyframe for u in units[1:])
    assert units[-1].pts == clock.pts(1234)
    assert len(units) <= clip_640.key.gop
    # P units carry only a small strip slice beyond the shared encoder slices
    p_unit = stream.make(1235)
    tail = p_unit.rtp_tail
    assert tail is not None
    assert tail.start == 1
    assert len(p_unit.nals[0]) < 200


def test_strip_slice_macroblock_kinds() -> None:
    """I_16x16 saturated blocks decode to exactly 0/255 next to I_PCM text, in an I and a P picture."""
    spec = StreamSpec(640, 360, FPS, 400_000, gop_s=1.0)
    clip = encode_clip(ClipKey.for_spec("h264", spec, loop_s=1.0), Panorama.build(), max_payload_for(1400))
    assert clip.sps is not None
    clock = FrameClock(FPS, 0, WALL0)
    stream = PreencodedStream(clip, "AB", clock, lambda: 0, TextMacroblocks(), phase=0)
    units = [stream.make(n) for n in range(0, 3)]
    ctx = av.CodecContext.create("h264", "r")
    pictures = []
    for au in units:
        data = b"".join(b"\x00\x00\x00\x01" + n for n in au.nals)
        pictures += [f.to_ndarray(format="yuv420p") for f in ctx.decode(av.Packet(data))]
    pictures += [f.to_ndarray(format="yuv420p") for f in ctx.decode(None)]
    assert len(pictures) == 3
    for picture in pictures:
        blocks = picture[:32, :512]
        assert set(np.unique(blocks)) <= {0, 255}
        assert picture[:32, 512:640].max() == 0
        assert picture[32:48].max() == 255  # text
        chroma = picture[360:]
        assert chroma[:12].min() == chroma[:12].max() == 128  # U rows of the strip
