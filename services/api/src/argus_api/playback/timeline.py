"""A camera's timeline: recorded spans, gaps with their causes, and (later) bookmarks and events, in one answer.

Spans are contiguous segments merged by the server (`PlaybackIndex.spans`), so a month of one camera at 6 s
segments is a few hundred entries at most, not 446,400 rows. Gaps are the recorder's own rows (`camera_offline`,
`recorder_failover`, ...) clipped to the range, plus any hole between two spans that no gap row explains (cause
`unknown`, source `index`): footage deleted, or lost without the recorder noticing. `bookmarks` and `events` are
empty lists until those features exist, so clients can already read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from argus_api.playback.index import Gap, Span, iso


def _holes(spans: Sequence[Span]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for prev, span in zip(spans, spans[1:], strict=False):
        if span.start_ms > prev.end_ms:
            out.append((prev.end_ms, span.start_ms))
    return out


def _uncovered(hole: tuple[int, int], gaps: Sequence[Gap]) -> list[tuple[int, int]]:
    """The parts of `hole` that no gap row covers."""
    parts = [hole]
    for gap in gaps:
        nxt: list[tuple[int, int]] = []
        for lo, hi in parts:
            if gap.end_ms <= lo or gap.start_ms >= hi:
                nxt.append((lo, hi))
                continue
            if gap.start_ms > lo:
                nxt.append((lo, gap.start_ms))
            if gap.end_ms < hi:
                nxt.append((gap.end_ms, hi))
        parts = nxt
    return parts


def build_timeline(
    camera: str, stream: str, start_ms: int, end_ms: int, spans: Sequence[Span], gaps: Sequence[Gap]
) -> dict[str, Any]:
    clipped = [Span(max(s.start_ms, start_ms), min(s.end_ms, end_ms), s.segments) for s in spans]
    clipped = [s for s in clipped if s.end_ms > s.start_ms]
    entries: list[tuple[int, dict[str, Any]]] = []
    for gap in gaps:
        lo, hi = max(gap.start_ms, start_ms), min(gap.end_ms, end_ms)
        if hi <= lo and not (gap.start_ms == gap.end_ms and start_ms <= gap.start_ms < end_ms):
            continue
        entry = {"start": iso(lo), "end": iso(max(lo, hi)), "cause": gap.cause, "detail": gap.detail}
        entries.append((lo, entry | {"source": "recorder"}))
    for hole in _holes(clipped):
        for lo, hi in _uncovered(hole, gaps):
            entries.append(
                (
                    lo,
                    {
                        "start": iso(lo),
                        "end": iso(hi),
                        "cause": "unknown",
                        "detail": "no footage, and no cause recorded",
                        "source": "index",
                    },
                )
            )
    entries.sort(key=lambda e: e[0])
    return {
        "camera": camera,
        "stream": stream,
        "from": iso(start_ms),
        "until": iso(end_ms),
        "recorded_s": sum(s.end_ms - s.start_ms for s in clipped) / 1000,
        "spans": [{"start": iso(s.start_ms), "end": iso(s.end_ms), "segments": s.segments} for s in clipped],
        "gaps": [e for _, e in entries],
        "bookmarks": [],
        "events": [],
    }
