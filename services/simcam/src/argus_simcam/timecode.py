"""The on-screen display (OSD) strip: a machine-readable capture timecode plus the camera name and time as text.

Every simulated picture carries, at its top edge, a strip `STRIP_HEIGHT` (48) luma rows tall and as wide as the
picture, always grey-free: luma 0 (black) or 255 (white), chroma neutral (128).

Layout (pixels of the encoded picture, origin top-left; one block = 16x16 luma pixels = one macroblock, so the
blocks are macroblock aligned and survive H.264/H.265 at low bitrates and 2x or 4x downscaling):

- Rows 0-31: the timecode, two rows of 32 blocks (512 pixels wide, blocks `(row r, column c)` at
  `x = 16*c .. 16*c+15`, `y = 16*r .. 16*r+15`). A white block is a 1, a black block a 0.

  - Markers: row 0 reads `1 0 ... 0 1` at columns 0, 1, 30, 31; row 1 reads `0 1 ... 1 0` there. A reader checks
    all eight; they tell it that it is looking at a strip, that it has the right scale and that the rows are in order.
  - Data: columns 2-29 of row 0, then columns 2-29 of row 1: 56 bits, most significant first. The first 48 bits
    are the capture time in Unix epoch milliseconds (by the camera's own clock, so a clock-skew fault shows), the
    last 8 bits are a CRC-8 (polynomial 0x07, initial value 0, no reflection, no final XOR) of those 48 bits taken
    as 6 big-endian bytes. A read whose CRC does not match is rejected.
  - The rest of rows 0-31 (x >= 512) is black.

- Rows 32-47: text, white on black, in a 5x7 bitmap font drawn at twice its size (glyph cells 12x16: 10x14 lit
  pixels starting at x offset 2 + 12*i, y = 33): `<camera name>  YYYY-MM-DD HH:MM:SS` (UTC, whole seconds; the
  milliseconds are in the blocks).

Reading (`read_timecode`): for a candidate block size B (16 first, then sizes for scaled copies of the picture),
take the mean luma of the central half (B/2 x B/2) of each of the 64 blocks, threshold it at the midpoint between
the mean of the white and the black marker blocks (which must differ by at least 64), check the markers and the
CRC. A JavaScript reader does the same on canvas pixels (luma ~ 0.299 R + 0.587 G + 0.114 B).

Pictures narrower than 512 pixels carry no timecode (the text row is still drawn).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import av
import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK",
    "STRIP_HEIGHT",
    "TEXT_ROW_Y",
    "TIMECODE_WIDTH",
    "crc8",
    "encode_blocks",
    "read_timecode",
    "render_strip",
    "render_text",
    "strip_text",
    "timecode_bits",
]

BLOCK: Final = 16
COLUMNS: Final = 32
ROWS: Final = 2
TIMECODE_WIDTH: Final = BLOCK * COLUMNS
TEXT_ROW_Y: Final = BLOCK * ROWS
STRIP_HEIGHT: Final = TEXT_ROW_Y + BLOCK
DATA_BITS: Final = 48
_MARK_COLUMNS: Final = (0, 1, 30, 31)
_MARKS: Final = ((1, 0, 0, 1), (0, 1, 1, 0))
_DATA_COLUMNS: Final = tuple(range(2, 30))
_MAX_MS: Final = (1 << DATA_BITS) - 1
_TEXT_SCALE: Final = 2
_GLYPH_ADVANCE: Final = 6 * _TEXT_SCALE
_TEXT_X0: Final = 2
_TEXT_Y0: Final = TEXT_ROW_Y + 1
# Sizes of a block in pictures scaled from the encoded one, most likely first.
_READ_BLOCK_SIZES: Final = (16.0, 8.0, 32.0, 12.0, 24.0, 10.0, 20.0, 4.0, 6.0, 64.0 / 3.0, 32.0 / 3.0, 40.0 / 3.0)

# A 5x7 font: seven rows per glyph, bit 4 is the leftmost column. Lower case is drawn as upper case.
_FONT_ROWS: Final[dict[str, tuple[int, ...]]] = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00),
    "-": (0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00),
    ".": (0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C),
    ",": (0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08),
    "/": (0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00),
    "_": (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "+": (0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00),
    "=": (0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00),
    "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A),
    "!": (0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04),
    "'": (0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00),
    "*": (0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00),
    "@": (0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0E),
}

Luma = npt.NDArray[np.uint8]


def _glyph_cells() -> dict[str, npt.NDArray[np.bool_]]:
    cells: dict[str, npt.NDArray[np.bool_]] = {}
    for char, rows in _FONT_ROWS.items():
        cell = np.zeros((7, 6), dtype=np.bool_)
        for y, bits in enumerate(rows):
            for x in range(5):
                cell[y, x] = bool(bits & (0x10 >> x))
        cells[char] = cell
    return cells


class _Font:
    """Glyph bitmaps, built once per process on first use (never at import time)."""

    cells: dict[str, npt.NDArray[np.bool_]] | None = None

    @classmethod
    def get(cls) -> dict[str, npt.NDArray[np.bool_]]:
        if cls.cells is None:
            cls.cells = _glyph_cells()
        return cls.cells


def render_text(text: str, scale: int = _TEXT_SCALE) -> npt.NDArray[np.bool_]:
    """The lit pixels of `text` in the built-in font: a (7*scale, 6*scale*len) boolean array."""
    cells = _Font.get()
    if not text:
        return np.zeros((7 * scale, 0), dtype=np.bool_)
    unknown = cells["?"]
    row = np.concatenate([cells.get(c, cells.get(c.upper(), unknown)) for c in text], axis=1)
    if scale > 1:
        row = np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)
    return row


def crc8(data: bytes) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), initial value 0, MSB first."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def timecode_bits(ms: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The 0/1 value of each of the 2 x 32 blocks for capture time `ms` (markers included)."""
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"timecode out of range: {ms}")
    crc = crc8(ms.to_bytes(6, "big"))
    word = (ms << 8) | crc
    data = [(word >> (55 - i)) & 1 for i in range(56)]
    rows: list[tuple[int, ...]] = []
    for r in range(ROWS):
        values = [0] * COLUMNS
        for col, mark in zip(_MARK_COLUMNS, _MARKS[r], strict=True):
            values[col] = mark
        for i, col in enumerate(_DATA_COLUMNS):
            values[col] = data[r * len(_DATA_COLUMNS) + i]
        rows.append(tuple(values))
    return rows[0], rows[1]


def encode_blocks(ms: int) -> Luma:
    """The timecode as luma: a (32, 512) uint8 array of 16x16 blocks, 255 for a 1 and 0 for a 0."""
    rows = timecode_bits(ms)
    small = np.array(rows, dtype=np.uint8) * np.uint8(255)
    return np.repeat(np.repeat(small, BLOCK, axis=0), BLOCK, axis=1)


def strip_text(name: str, capture_ms: int) -> str:
    """The text line of the strip: camera name and UTC time to the second."""
    try:
        when = dt.datetime.fromtimestamp(capture_ms // 1000, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):  # beyond what datetime can show: print the number
        return f"{name}  {capture_ms // 1000}"
    return f"{name}  {when:%Y-%m-%d %H:%M:%S}"


def render_text_row(text: str, width: int) -> Luma:
    """Luma of the strip's text row (16 rows by `width`), white text on black, clipped at the right edge."""
    out = np.zeros((BLOCK, width), dtype=np.uint8)
    lit = render_text(text)
    w = max(0, min(lit.shape[1], width - _TEXT_X0))
    out[_TEXT_Y0 - TEXT_ROW_Y : _TEXT_Y0 - TEXT_ROW_Y + lit.shape[0], _TEXT_X0 : _TEXT_X0 + w][lit[:, :w]] = 255
    return out


def render_strip(width: int, name: str, capture_ms: int | None) -> Luma:
    """The whole strip's luma, (STRIP_HEIGHT, width); its chroma is 128 throughout.

    `capture_ms=None` draws the strip without timecode blocks and without time (used where no live time exists).
    """
    strip = np.zeros((STRIP_HEIGHT, width), dtype=np.uint8)
    if capture_ms is not None and width >= TIMECODE_WIDTH:
        strip[:TEXT_ROW_Y, :TIMECODE_WIDTH] = encode_blocks(capture_ms)
    text = strip_text(name, capture_ms) if capture_ms is not None else name
    strip[TEXT_ROW_Y:] = render_text_row(text, width)
    return strip


def _luma_of(frame: object) -> npt.NDArray[np.generic]:
    if isinstance(frame, np.ndarray):
        if frame.ndim == 2:
            return frame
        if frame.ndim == 3 and frame.shape[2] >= 3:
            rgb = frame[..., :3].astype(np.float32)
            luma: npt.NDArray[np.float32] = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            return luma
        raise ValueError(f"unsupported array shape {frame.shape}")
    if isinstance(frame, av.VideoFrame):
        return _video_frame_luma(frame)
    raise TypeError(f"unsupported frame type {type(frame).__name__}")


def _video_frame_luma(frame: av.VideoFrame) -> npt.NDArray[np.generic]:
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray", "nv12"):
        plane = frame.planes[0]
        raw = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
        return raw[:, : frame.width]
    gray = frame.reformat(format="gray").to_ndarray()
    return np.asarray(gray)


def read_timecode(frame: object) -> int | None:
    """The capture time (epoch ms) in a picture's strip, or None if there is none or it does not read cleanly.

    `frame` is a 2-D luma array, an RGB(A) array (H, W, 3|4), or an `av.VideoFrame`. Works on the picture as
    encoded and on copies scaled by common factors (see `_READ_BLOCK_SIZES`).
    """
    luma = _luma_of(frame)
    height, width = luma.shape
    for size in _READ_BLOCK_SIZES:
        if size * COLUMNS > width + 0.5 or size * ROWS > height + 0.5:
            continue
        value = _read_at(luma, size)
        if value is not None:
            return value
    return None


def _read_at(luma: npt.NDArray[np.generic], size: float) -> int | None:
    inner = max(1, round(size / 2))
    offset = (size - inner) / 2
    means = np.empty((ROWS, COLUMNS), dtype=np.float64)
    for r in range(ROWS):
        y0 = round(r * size + offset)
        band = luma[y0 : y0 + inner].astype(np.float64)
        for c in range(COLUMNS):
            x0 = round(c * size + offset)
            means[r, c] = band[:, x0 : x0 + inner].mean()
    whites = [means[r, col] for r in range(ROWS) for col, m in zip(_MARK_COLUMNS, _MARKS[r], strict=True) if m]
    blacks = [means[r, col] for r in range(ROWS) for col, m in zip(_MARK_COLUMNS, _MARKS[r], strict=True) if not m]
    if min(whites) - max(blacks) < 64:
        return None
    threshold = (float(np.mean(whites)) + float(np.mean(blacks))) / 2
    bits = means > threshold
    word = 0
    for r in range(ROWS):
        for col in _DATA_COLUMNS:
            word = (word << 1) | int(bits[r, col])
    ms, crc = word >> 8, word & 0xFF
    if crc8(ms.to_bytes(6, "big")) != crc:
        return None
    return ms
