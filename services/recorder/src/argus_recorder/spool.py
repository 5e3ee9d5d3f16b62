"""The local spool: segments, init segments and index rows kept on disk while S3 or Postgres is down.

Layout under the spool folder (created when first needed):

    seg/<start_ns>-<key hash>.m4s    a media segment not yet in S3
    seg/<start_ns>-<key hash>.json   its index row; `uploaded` once the media is in S3 (the .m4s is then gone)
    init/<hash>.mp4, init/<hash>.json  an init segment not yet in S3, and its key
    gap/<start_ns>-<hash>.json       a gap row not yet in Postgres
    tmp/                             files being written

Every file is written to tmp/, flushed to disk and renamed into place, and the folder is synced, so a crash
leaves whole items or nothing; a media file without its row is a half-written item and is removed at start. A
segment counts as safely stored (its packets are acked) once its row file is in place.

The spool is bounded by `max_bytes` of media: when a new segment does not fit, the oldest segments not yet in
S3 are dropped to make room (the newest footage is kept) and returned so the caller records the loss as a gap.
Blocking: call it from a thread. One lock serialises the calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import msgspec

from argus_recorder.errors import SpoolError
from argus_recorder.index import GapRow, SegmentRow

log = logging.getLogger(__name__)


class _SegmentMeta(msgspec.Struct, frozen=True, kw_only=True):
    row: SegmentRow
    uploaded: bool


class _InitMeta(msgspec.Struct, frozen=True, kw_only=True):
    key: str


@dataclass(frozen=True, slots=True)
class SpooledSegment:
    name: str
    row: SegmentRow
    uploaded: bool
    size: int


@dataclass(frozen=True, slots=True)
class SpooledGap:
    name: str
    row: GapRow


@dataclass(frozen=True, slots=True)
class SpoolState:
    used_bytes: int
    segments: int
    rows: int  # segments in S3 whose row waits for Postgres
    gaps: int
    inits: int


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Spool:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._segments: dict[str, SpooledSegment] = {}
        self._gaps: dict[str, SpooledGap] = {}
        self._inits: dict[str, tuple[str, int]] = {}  # name -> (key, size)
        self._used = 0
        self._ready = False
        self._encoder = msgspec.json.Encoder()
        self._snapshot = SpoolState(0, 0, 0, 0, 0)

    # --- state ----------------------------------------------------------------------------------------------------

    def state(self) -> SpoolState:
        """The counts as of the last change (no lock: safe to read from the event loop while a thread writes)."""
        return self._snapshot

    @property
    def empty(self) -> bool:
        state = self._snapshot
        return not (state.segments or state.rows or state.gaps or state.inits)

    def _state(self) -> SpoolState:
        pending = sum(1 for s in self._segments.values() if not s.uploaded)
        self._snapshot = SpoolState(
            self._used, pending, len(self._segments) - pending, len(self._gaps), len(self._inits)
        )
        return self._snapshot

    # --- start ----------------------------------------------------------------------------------------------------

    def load(self) -> SpoolState:
        """Read what an earlier run left (if the folder exists); remove half-written files."""
        with self._lock:
            self._segments.clear()
            self._gaps.clear()
            self._inits.clear()
            self._used = 0
            if self.root.is_dir():
                self._scan()
            self._ready = self.root.is_dir()
            return self._state()

    def _scan(self) -> None:
        tmp = self.root / "tmp"
        if tmp.is_dir():
            for leftover in tmp.iterdir():
                leftover.unlink(missing_ok=True)
        seg_dir = self.root / "seg"
        if seg_dir.is_dir():
            for meta_path in sorted(seg_dir.glob("*.json")):
                try:
                    meta = msgspec.json.decode(meta_path.read_bytes(), type=_SegmentMeta)
                except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.error("spool: unreadable segment row %s (%s): moved aside", meta_path, exc)  # noqa: TRY400
                    meta_path.rename(meta_path.with_suffix(".bad"))
                    continue
                media = meta_path.with_suffix(".m4s")
                size = media.stat().st_size if media.exists() else 0
                if not meta.uploaded and not size:
                    log.error("spool: segment %s lost its media: its row is dropped", meta.row.object_key)
                    meta_path.unlink()
                    continue
                name = meta_path.stem
                self._segments[name] = SpooledSegment(name, meta.row, meta.uploaded, size)
                self._used += size
            for media in seg_dir.glob("*.m4s"):
                if media.stem not in self._segments:
                    media.unlink()  # written, but the crash came before its row: never acked, will come again
        gap_dir = self.root / "gap"
        if gap_dir.is_dir():
            for path in sorted(gap_dir.glob("*.json")):
                try:
                    row = msgspec.json.decode(path.read_bytes(), type=GapRow)
                except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.error("spool: unreadable gap row %s (%s): moved aside", path, exc)  # noqa: TRY400
                    path.rename(path.with_suffix(".bad"))
                    continue
                self._gaps[path.stem] = SpooledGap(path.stem, row)
        init_dir = self.root / "init"
        if init_dir.is_dir():
            for path in sorted(init_dir.glob("*.json")):
                data = path.with_suffix(".mp4")
                if not data.exists():
                    path.unlink()
                    continue
                key = msgspec.json.decode(path.read_bytes(), type=_InitMeta).key
                size = data.stat().st_size
                self._inits[path.stem] = (key, size)
                self._used += size

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            for sub in ("seg", "gap", "init", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool at {self.root}: {exc}") from exc
        self._ready = True

    # --- writing --------------------------------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        tmp = self.root / "tmp" / f"{path.name}.{os.getpid()}.{threading.get_ident()}"
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write {path}: {exc}") from exc

    def add_segment(self, row: SegmentRow, media: bytes | None) -> list[SegmentRow]:
        """Keep a segment (`media` None: it is in S3 already, only its row waits). Returns the rows dropped."""
        with self._lock:
            self._prepare()
            size = len(media) if media is not None else 0
            dropped: list[SegmentRow] = []
            if size:
                reclaimable = sum(s.size for s in self._segments.values() if not s.uploaded)
                if self._used - reclaimable + size > self.max_bytes:
                    return [row]  # it would not fit even in an emptied spool: keep what is there
                for name in sorted(self._segments):
                    if self._used + size <= self.max_bytes:
                        break
                    old = self._segments[name]
                    if old.uploaded:
                        continue
                    self._remove_segment(old)
                    dropped.append(old.row)
            name = f"{row.start_ns:020d}-{_digest(row.object_key)}"
            seg_dir = self.root / "seg"
            if media is not None:
                self._write(seg_dir / f"{name}.m4s", media)
            self._write(seg_dir / f"{name}.json", self._encoder.encode(_SegmentMeta(row=row, uploaded=media is None)))
            previous = self._segments.get(name)
            if previous is not None:
                self._used -= previous.size
            self._segments[name] = SpooledSegment(name, row, media is None, size)
            self._used += size
            self._state()
            return dropped

    def add_init(self, key: str, data: bytes) -> None:
        with self._lock:
            self._prepare()
            name = _digest(key)
            if name in self._inits:
                return
            init_dir = self.root / "init"
            self._write(init_dir / f"{name}.mp4", data)
            self._write(init_dir / f"{name}.json", self._encoder.encode(_InitMeta(key=key)))
            self._inits[name] = (key, len(data))
            self._used += len(data)
            self._state()

    def add_gap(self, row: GapRow) -> None:
        with self._lock:
            self._prepare()
            name = f"{row.start_ns:020d}-{_digest(f'{row.camera}/{row.stream}/{row.cause}')}"
            self._write(self.root / "gap" / f"{name}.json", self._encoder.encode(row))
            self._gaps[name] = SpooledGap(name, row)
            self._state()

    # --- reading back ---------------------------------------------------------------------------------------------

    def segments(self) -> list[SpooledSegment]:
        with self._lock:
            return [self._segments[name] for name in sorted(self._segments)]

    def gaps(self) -> list[SpooledGap]:
        with self._lock:
            return [self._gaps[name] for name in sorted(self._gaps)]

    def inits(self) -> list[tuple[str, str]]:
        """(name, key) of every init segment waiting for S3."""
        with self._lock:
            return [(name, key) for name, (key, _) in sorted(self._inits.items())]

    def read_media(self, item: SpooledSegment) -> bytes:
        try:
            return (self.root / "seg" / f"{item.name}.m4s").read_bytes()
        except OSError as exc:
            raise SpoolError(f"cannot read spooled segment {item.row.object_key}: {exc}") from exc

    def read_init(self, name: str) -> bytes:
        try:
            return (self.root / "init" / f"{name}.mp4").read_bytes()
        except OSError as exc:
            raise SpoolError(f"cannot read spooled init segment {name}: {exc}") from exc

    # --- progress -------------------------------------------------------------------------------------------------

    def mark_uploaded(self, item: SpooledSegment) -> None:
        with self._lock:
            current = self._segments.get(item.name)
            if current is None:
                return
            seg_dir = self.root / "seg"
            self._write(
                seg_dir / f"{item.name}.json", self._encoder.encode(_SegmentMeta(row=current.row, uploaded=True))
            )
            (seg_dir / f"{item.name}.m4s").unlink(missing_ok=True)
            self._used -= current.size
            self._segments[item.name] = SpooledSegment(item.name, current.row, True, 0)
            self._state()

    def remove_segment(self, item: SpooledSegment) -> None:
        with self._lock:
            current = self._segments.get(item.name)
            if current is not None:
                self._remove_segment(current)
                self._state()

    def _remove_segment(self, item: SpooledSegment) -> None:
        seg_dir = self.root / "seg"
        (seg_dir / f"{item.name}.json").unlink(missing_ok=True)  # the row first: without it the media is junk
        (seg_dir / f"{item.name}.m4s").unlink(missing_ok=True)
        self._used -= item.size
        del self._segments[item.name]

    def remove_gap(self, item: SpooledGap) -> None:
        with self._lock:
            (self.root / "gap" / f"{item.name}.json").unlink(missing_ok=True)
            self._gaps.pop(item.name, None)
            self._state()

    def remove_init(self, name: str) -> None:
        with self._lock:
            entry = self._inits.pop(name, None)
            init_dir = self.root / "init"
            (init_dir / f"{name}.json").unlink(missing_ok=True)
            (init_dir / f"{name}.mp4").unlink(missing_ok=True)
            if entry is not None:
                self._used -= entry[1]
            self._state()
