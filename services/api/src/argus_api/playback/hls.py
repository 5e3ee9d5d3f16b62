"""HLS media playlists (RFC 8216) over stored fMP4 segments, and the signed URLs of proxied segments.

A playlist lists the segments of a window in start order. Its timeline is the sum of `EXTINF` durations: the
recorded footage, gaps squeezed out. `EXT-X-PROGRAM-DATE-TIME` on every segment gives its wall-clock start, so a
player can show the time of any frame and seek by time; `EXT-X-MAP` names the init segment, again whenever it
changes; `EXT-X-DISCONTINUITY` comes before a segment that does not follow on from the one before it:

* a gap: it starts later than the previous one ended (beyond the join tolerance);
* a new init segment: the codec, picture size or parameter sets changed;
* an overlap: it starts before the previous one ended (a camera clock that stepped back).

How the media timestamps line up depends on delivery. Streamed through the api (`proxy`), each segment's `tfdt`
is rewritten to its playlist position (see `fmp4.TfdtPatcher`), so timestamps run on across the whole playlist
and the discontinuities only say what changed. From presigned S3 URLs the stored bytes are served as they are,
each segment's decode time starting at 0: the timestamp sequence restarts at every segment, so RFC 8216 requires
`EXT-X-DISCONTINUITY` before every segment. hls.js and native players follow that; FFmpeg's HLS demuxer does not
(it drops frames whose timestamps go back), so tools that read playlists with FFmpeg should ask for `proxy`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from argus_api.playback.index import Segment, iso

VERSION = 6  # EXT-X-MAP outside an I-frame playlist
SEGMENT_PATH = "/api/v1/playback/s/"


@dataclass(frozen=True, slots=True)
class Entry:
    """One segment's place in a playlist."""

    segment: Segment
    position_ms: int  # playlist time at which it starts: the sum of the EXTINF durations before it
    discontinuity: str  # "" (follows on), "gap", "init", "overlap", or "restart" (presigned: every segment)
    new_init: bool

    @property
    def duration_ms(self) -> int:
        return max(1, self.segment.end_ms - self.segment.start_ms)


def plan(segments: Sequence[Segment], *, tolerance_ms: int, restart_every_segment: bool) -> list[Entry]:
    """The entries of a playlist of `segments` (in start order)."""
    out: list[Entry] = []
    position = 0
    prev: Segment | None = None
    for seg in segments:
        reason = ""
        if prev is not None:
            if seg.init_key != prev.init_key:
                reason = "init"
            elif seg.start_ms > prev.end_ms + tolerance_ms:
                reason = "gap"
            elif seg.start_ms < prev.end_ms - tolerance_ms:
                reason = "overlap"
            elif restart_every_segment:
                reason = "restart"
        entry = Entry(seg, position, reason, prev is None or seg.init_key != prev.init_key)
        out.append(entry)
        position += entry.duration_ms
        prev = seg
    return out


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def render(
    entries: Sequence[Entry],
    *,
    media_uri: Callable[[Entry], str],
    init_uri: Callable[[Entry], str],
    start_offset_ms: int | None = None,
) -> str:
    """The playlist text. `start_offset_ms` adds `EXT-X-START` (where playback begins, precisely)."""
    if not entries:
        raise ValueError("a playlist needs at least one segment")
    target = max(1, max(math.ceil(e.duration_ms / 1000) for e in entries))
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if start_offset_ms is not None:
        lines.append(f"#EXT-X-START:TIME-OFFSET={_seconds(max(0, start_offset_ms))},PRECISE=YES")
    for entry in entries:
        if entry.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if entry.new_init:
            lines.append(f'#EXT-X-MAP:URI="{init_uri(entry)}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(entry.segment.start_ms)}")
        lines.append(f"#EXTINF:{_seconds(entry.duration_ms)},")
        lines.append(media_uri(entry))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def playlist_duration_ms(entries: Sequence[Entry]) -> int:
    return sum(e.duration_ms for e in entries)


def position_of(entries: Sequence[Entry], at_ms: int) -> int | None:
    """The playlist time of wall-clock instant `at_ms`, if a segment holds it (else the next segment's start)."""
    for entry in entries:
        if entry.segment.end_ms > at_ms:
            return entry.position_ms + max(0, at_ms - entry.segment.start_ms)
    return None


# --- signed URLs of proxied segments -----------------------------------------------------------------------------


class BadSignature(Exception):
    """A proxied segment URL that this api did not sign, or whose time is up."""


@dataclass(frozen=True, slots=True)
class SegmentGrant:
    """What a signed URL lets its holder fetch: one object, with the decode time its fragments start at."""

    key: str
    init_key: str  # empty for an init segment
    offset_ms: int  # playlist position (media segments)
    expires: int  # epoch seconds
    size: int = 0  # bytes of a media segment (from the index): the length of a ranged answer


class UrlSigner:
    """HMAC-SHA256 over what a proxied segment URL grants, truncated to 128 bits, base64url."""

    def __init__(self, key: bytes, *, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the URL signing key must be at least 16 bytes")
        self._key = key
        self._ttl_s = ttl_s
        self._clock = clock

    def expiry(self) -> int:
        return int(self._clock() + self._ttl_s)

    def _mac(self, grant: SegmentGrant) -> str:
        message = f"{grant.key}\n{grant.init_key}\n{grant.offset_ms}\n{grant.size}\n{grant.expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, grant: SegmentGrant) -> str:
        query = f"e={grant.expires}&s={self._mac(grant)}"
        if grant.init_key:
            query = f"i={quote(grant.init_key, safe='/')}&o={grant.offset_ms}&n={grant.size}&{query}"
        return f"{SEGMENT_PATH}{quote(grant.key, safe='/')}?{query}"

    def verify(self, key: str, query: dict[str, str]) -> SegmentGrant:
        try:
            grant = SegmentGrant(
                key=key,
                init_key=query.get("i", ""),
                offset_ms=int(query.get("o", "0")),
                expires=int(query["e"]),
                size=int(query.get("n", "0")),
            )
            mac = query["s"]
        except (KeyError, ValueError) as exc:
            raise BadSignature("incomplete segment URL") from exc
        if not hmac.compare_digest(mac, self._mac(grant)):
            raise BadSignature("segment URL signature does not match")
        if grant.expires < self._clock():
            raise BadSignature("segment URL has expired: reload the playlist")
        return grant
