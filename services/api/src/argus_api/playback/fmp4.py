"""Just enough ISO BMFF to place stored fMP4 segments on one playlist timeline.

The recorder stores each media segment with its decode time starting at 0 (`tfdt` of its first fragment); its
place on the wall clock is the index row's. A player fed such segments back to back sees time restart at every
segment. When segments are streamed through the api, `TfdtPatcher` rewrites each fragment's
`baseMediaDecodeTime` to `base + (tfdt - first tfdt of the segment)`, so a run of segments reads as one continuous
timeline. The boxes keep their sizes (a version 0 `tfdt` whose new value does not fit in 32 bits is refused), so
byte offsets, and with them HTTP range requests, are the same before and after.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from argus_core.errors import ArgusError

_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts"})
MAX_MOOF = 4 * 1024 * 1024  # a fragment header: a few kB per GOP in practice


class BoxError(ArgusError):
    """The bytes are not the fragmented MP4 playback expects."""


@dataclass(frozen=True, slots=True)
class Box:
    kind: bytes
    start: int  # offset of the box's first byte
    header: int  # 8, or 16 with a 64-bit size
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def body(self) -> int:
        return self.start + self.header


def box_at(data: bytes | bytearray | memoryview, pos: int, end: int) -> Box | None:
    """The box whose header starts at `pos`, or None if fewer than its header's bytes are there."""
    if pos + 8 > end:
        return None
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        if pos + 16 > end:
            return None
        size = struct.unpack_from(">Q", data, pos + 8)[0]
        header = 16
    elif size == 0:
        raise BoxError(f"box {kind!r} at {pos} runs to the end of the file: not a fragmented MP4 segment")
    if size < header:
        raise BoxError(f"box {kind!r} at {pos} has an impossible size {size}")
    return Box(bytes(kind), pos, header, int(size))


def boxes(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid end to end in `data[start:end]`."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        box = box_at(data, pos, end)
        if box is None or box.end > end:
            raise BoxError(f"truncated box at {pos}")
        yield box
        pos = box.end


def find(data: bytes | bytearray | memoryview, path: tuple[bytes, ...], start: int = 0, end: int | None = None) -> Box:
    """The first box along `path` (e.g. `(b"moov", b"trak", b"mdia", b"mdhd")`)."""
    for box in boxes(data, start, end):
        if box.kind == path[0]:
            if len(path) == 1:
                return box
            try:
                return find(data, path[1:], box.body, box.end)
            except BoxError:
                continue
    raise BoxError(f"no {b'/'.join(path).decode(errors='replace')} box")


def timescale(init: bytes) -> int:
    """Ticks per second of the (first) track of an init segment: its `mdhd` timescale."""
    mdhd = find(init, (b"moov", b"trak", b"mdia", b"mdhd"))
    version = init[mdhd.body]
    offset = mdhd.body + (20 if version == 1 else 12)
    if offset + 4 > mdhd.end:
        raise BoxError("short mdhd box")
    value = int(struct.unpack_from(">I", init, offset)[0])
    if value <= 0:
        raise BoxError("mdhd timescale is 0")
    return value


class TfdtPatcher:
    """Rewrites `tfdt` in a media segment as it streams past, chunk by chunk; output is the input's length.

    Top-level boxes other than `moof` pass through untouched as they arrive; a `moof` is held until it is whole
    (a few kB), patched and released. `base` is the decode time, in the track's timescale, that the segment's
    first fragment gets.
    """

    def __init__(self, base: int) -> None:
        if base < 0:
            raise ValueError("base decode time must not be negative")
        self._base = base
        self._first: int | None = None
        self._pending = bytearray()  # an incomplete box header, or a moof being gathered
        self._pass = 0  # bytes of the current non-moof box still to pass through
        self._moof: int = 0  # size of the moof being gathered (0: none)
        self.fragments = 0

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            if self._pass:
                n = min(self._pass, len(view) - pos)
                out += view[pos : pos + n]
                self._pass -= n
                pos += n
                continue
            if self._moof:
                n = min(self._moof - len(self._pending), len(view) - pos)
                self._pending += view[pos : pos + n]
                pos += n
                if len(self._pending) == self._moof:
                    out += self._patch(self._pending)
                    self._pending = bytearray()
                    self._moof = 0
                continue
            # At a box boundary: gather the header.
            need = 16 if len(self._pending) >= 8 and struct.unpack_from(">I", self._pending, 0)[0] == 1 else 8
            n = min(need - len(self._pending), len(view) - pos)
            self._pending += view[pos : pos + n]
            pos += n
            if len(self._pending) < need:
                continue
            box = box_at(self._pending, 0, len(self._pending))
            if box is None:  # a 64-bit size: read 8 more bytes
                continue
            if box.kind == b"moof":
                if box.size > MAX_MOOF:
                    raise BoxError(f"moof of {box.size} bytes")
                self._moof = box.size
                if len(self._pending) == box.size:
                    out += self._patch(self._pending)
                    self._pending = bytearray()
                    self._moof = 0
            else:
                out += self._pending
                self._pass = box.size - len(self._pending)
                self._pending = bytearray()
        return bytes(out)

    def finish(self) -> None:
        """Check that the stream ended on a box boundary."""
        if self._pending or self._pass or self._moof:
            raise BoxError("the segment ended inside a box")

    def _patch(self, moof: bytearray) -> bytes:
        for traf in boxes(moof, 8, len(moof)):
            if traf.kind != b"traf":
                continue
            for box in boxes(moof, traf.body, traf.end):
                if box.kind != b"tfdt":
                    continue
                version = moof[box.body]
                if version == 1:
                    old = int(struct.unpack_from(">Q", moof, box.body + 4)[0])
                else:
                    old = int(struct.unpack_from(">I", moof, box.body + 4)[0])
                if self._first is None:
                    self._first = old
                new = self._base + old - self._first
                if version == 1:
                    struct.pack_into(">Q", moof, box.body + 4, new)
                elif new < 2**32:
                    struct.pack_into(">I", moof, box.body + 4, new)
                else:
                    raise BoxError("a 32-bit tfdt cannot hold the decode time")
        self.fragments += 1
        return bytes(moof)


def patch_tfdt(data: bytes, base: int) -> bytes:
    """`TfdtPatcher` over a whole segment."""
    patcher = TfdtPatcher(base)
    out = patcher.feed(data)
    patcher.finish()
    return out
