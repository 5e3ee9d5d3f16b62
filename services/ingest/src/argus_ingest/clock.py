"""The wall-clock capture time of each packet, and how far the camera's clock is from ours.

FFmpeg's RTSP demuxer maps the camera's first RTCP sender report to `start_time_realtime`: the camera's wall clock
(UTC, microseconds) at presentation time 0 of the session. A packet's capture time by the camera's clock is then
`start_time_realtime + pts * time_base`. PyAV shows only that first mapping, not later sender reports, so a
camera whose RTP clock drifts from its wall clock is not followed within a session; the offset below watches for it.

Our own view of the same instant is the packet's arrival time minus the network and buffering delay. For every
packet `arrival - media_time` is our clock at presentation time 0 plus that delay; its minimum over a sliding
window (the least delayed packet) is the *anchor*. Then:

- clock offset (camera minus ours) = `start_time_realtime - anchor`: the camera's clock error, low by the smallest
  delay seen (a few milliseconds on a LAN);
- time is *trusted* when the camera sent a sender report and the offset is within the tolerance: the capture time
  is the camera's (`start_time_realtime + media_time`);
- otherwise (no sender report yet, or a camera clock that is off) the capture time is ours: `anchor + media_time`,
  smooth from packet to packet; the anchor follows the window's minimum at a bounded slew so that the times never
  jump by more than a fraction of a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

NS = 1_000_000_000


class _WindowMin:
    """Minimum of samples over roughly the last `window_ns` (two half-window buckets: O(1) per sample)."""

    def __init__(self, window_ns: int) -> None:
        self._half = max(1, window_ns // 2)
        self._bucket_start = 0
        self._current: int | None = None
        self._previous: int | None = None

    def add(self, at_ns: int, value: int) -> None:
        if self._current is None and self._previous is None:
            self._bucket_start = at_ns
        if at_ns - self._bucket_start >= self._half:
            stale = at_ns - self._bucket_start >= 2 * self._half
            self._previous = None if stale else self._current
            self._current = None
            self._bucket_start = at_ns
        self._current = value if self._current is None else min(self._current, value)

    @property
    def value(self) -> int | None:
        values = [v for v in (self._current, self._previous) if v is not None]
        return min(values) if values else None


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    tolerance_ns: int = NS  # a camera clock further than this from ours is not trusted
    window_ns: int = 10 * NS
    slew_ns_per_packet: int = 1_000_000  # 25 ms/s at 25 fps: follows crystal drift, never jumps a frame


class CaptureClock:
    """One session's capture clock. Feed every packet's media time and arrival time with `sample()`."""

    def __init__(self, policy: ClockPolicy | None = None) -> None:
        self.policy = policy or ClockPolicy()
        self._window = _WindowMin(self.policy.window_ns)
        self._realtime_ns: int | None = None
        self._anchor: int | None = None  # the anchor in use for our own capture times (slewed)

    def set_realtime(self, start_time_realtime_us: int | None) -> None:
        """The container's `start_time_realtime` (µs) once a sender report has arrived; fixed per session."""
        if start_time_realtime_us is not None and self._realtime_ns is None:
            self._realtime_ns = start_time_realtime_us * 1000

    def sample(self, media_ns: int, arrival_ns: int) -> None:
        self._window.add(arrival_ns, arrival_ns - media_ns)

    @property
    def has_rtcp(self) -> bool:
        return self._realtime_ns is not None

    @property
    def offset_ns(self) -> int | None:
        """Camera clock minus ours, when the camera sent a sender report and packets were seen."""
        anchor = self._window.value
        if self._realtime_ns is None or anchor is None:
            return None
        return self._realtime_ns - anchor

    @property
    def trusted(self) -> bool:
        offset = self.offset_ns
        return offset is not None and abs(offset) <= self.policy.tolerance_ns

    def capture(self, media_ns: int) -> tuple[int, bool]:
        """The capture time (UTC ns) of a packet presented at `media_ns`, and whether it is the camera's (trusted)."""
        target = self._window.value
        if self._anchor is None or target is None:
            self._anchor = target if target is not None else self._anchor
        else:
            step = self.policy.slew_ns_per_packet
            self._anchor += max(-step, min(step, target - self._anchor))
        if self._realtime_ns is not None and self.trusted:
            return self._realtime_ns + media_ns, True
        if self._anchor is None:
            raise RuntimeError("capture() before any sample()")
        return self._anchor + media_ns, False
