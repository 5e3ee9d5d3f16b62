"""The OSD timecode: layout, CRC, reading back after real H.264 encoding, downscaling, and the text font."""

from __future__ import annotations

import random

import av
import numpy as np
import numpy.typing as npt
import pytest

from argus_simcam.encoder import open_encoder
from argus_simcam.faults import FaultState
from argus_simcam.scene import CameraScene, Panorama, ViewWindow
from argus_simcam.stream import StreamSpec
from argus_simcam.timecode import (
    STRIP_HEIGHT,
    TIMECODE_WIDTH,
    crc8,
    encode_blocks,
    read_timecode,
    render_strip,
    render_text,
    timecode_bits,
)

MS = 1_753_000_123_456


def _canvas(ms: int, width: int = 1280, height: int = 720) -> npt.NDArray[np.uint8]:
    frame = np.full((height, width), 90, dtype=np.uint8)
    frame[:STRIP_HEIGHT] = render_strip(width, "CAM 1", ms)
    return frame


def _downscale(luma: npt.NDArray[np.uint8], factor: int) -> npt.NDArray[np.uint8]:
    h, w = luma.shape[0] // factor * factor, luma.shape[1] // factor * factor
    small = luma[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return np.asarray(small.round(), dtype=np.uint8)


def test_blocks_layout() -> None:
    blocks = encode_blocks(MS)
    assert blocks.shape == (32, TIMECODE_WIDTH)
    assert set(np.unique(blocks)) <= {0, 255}
    rows = timecode_bits(MS)
    # markers: row 0 = 1 0 ... 0 1, row 1 = 0 1 ... 1 0
    assert (rows[0][0], rows[0][1], rows[0][30], rows[0][31]) == (1, 0, 0, 1)
    assert (rows[1][0], rows[1][1], rows[1][30], rows[1][31]) == (0, 1, 1, 0)
    bits = "".join(str(b) for b in rows[0][2:30] + rows[1][2:30])
    assert int(bits[:48], 2) == MS
    assert int(bits[48:], 2) == crc8(MS.to_bytes(6, "big"))
    # every block is a uniform 16x16 macroblock
    for r in range(2):
        for c in range(32):
            block = blocks[16 * r : 16 * r + 16, 16 * c : 16 * c + 16]
            assert block.min() == block.max() == 255 * rows[r][c]


def test_crc8_known_value() -> None:
    # CRC-8/SMBUS (poly 0x07, init 0) check value for "123456789"
    assert crc8(b"123456789") == 0xF4


def test_round_trip_many_values() -> None:
    rng = random.Random(3)
    for ms in [0, 1, (1 << 48) - 1, MS, *(rng.randrange(1 << 48) for _ in range(50))]:
        assert read_timecode(_canvas(ms)) == ms


def test_out_of_range_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_blocks(1 << 48)


def test_bad_read_is_rejected() -> None:
    frame = _canvas(MS)
    frame[4:12, 16 * 5 + 4 : 16 * 5 + 12] ^= 0xFF  # flip the centre of one data block
    assert read_timecode(frame) is None
    assert read_timecode(np.zeros((720, 1280), np.uint8)) is None
    assert read_timecode(np.full((720, 1280), 200, np.uint8)) is None


@pytest.mark.parametrize("factor", [2, 4])
def test_reads_downscaled_copies(factor: int) -> None:
    assert read_timecode(_downscale(_canvas(MS), factor)) == MS


def test_reads_rgb_and_video_frame() -> None:
    luma = _canvas(MS)
    rgb = np.repeat(luma[:, :, None], 3, axis=2)
    assert read_timecode(rgb) == MS
    yuv = np.concatenate([luma, np.full((360, 1280), 128, np.uint8)])
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    assert read_timecode(frame) == MS
    assert read_timecode(frame.reformat(format="rgb24")) == MS


def test_font_renders_text() -> None:
    lit = render_text("CAM 01:23", scale=1)
    assert lit.shape == (7, 6 * 9)
    assert lit[:, :5].any()  # "C" has pixels
    assert not lit[:, 18:24].any()  # the space has none
    strip = render_strip(640, "north gate", MS)
    assert strip.shape == (STRIP_HEIGHT, 640)
    assert strip[32:].max() == 255  # text row drawn


@pytest.mark.parametrize(("width", "height", "bitrate"), [(1280, 720, 2_000_000), (640, 360, 300_000)])
def test_every_encoded_frame_reads_back(width: int, height: int, bitrate: int) -> None:
    """Encode the real scene with libx264 at a low bitrate; every decoded frame gives its exact capture time."""
    spec = StreamSpec(width, height, fps=25, bitrate=bitrate)
    scene = CameraScene(Panorama.build(), "CAM 7", width, height)
    encoder = open_encoder("h264", width, height, spec)
    decoder = av.CodecContext.create("h264", "r")
    faults = FaultState()
    start = MS - MS % 1000
    expected = [start + 40 * n for n in range(60)]
    got: list[int | None] = []
    halves: list[int | None] = []

    def consume(packets: list[av.Packet]) -> None:  # type: ignore[type-arg]
        for packet in packets:
            for frame in decoder.decode(av.Packet(bytes(packet))):
                assert isinstance(frame, av.VideoFrame)
                got.append(read_timecode(frame))
                luma = np.asarray(frame.to_ndarray(format="yuv420p")[:height], np.uint8)
                halves.append(read_timecode(_downscale(luma, 2)))

    for n, ms in enumerate(expected):
        picture = scene.render(ViewWindow(0.1 * (n % 5), 0.0, 0.0), n / 25, faults, capture_ms=ms)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = n
        consume(list(encoder.encode(frame)))
    consume(list(encoder.encode(None)))
    assert got == expected
    assert all(b - a == 40 for a, b in zip(got, got[1:], strict=False) if a is not None and b is not None)
    if width >= 2 * TIMECODE_WIDTH:
        assert halves == expected
