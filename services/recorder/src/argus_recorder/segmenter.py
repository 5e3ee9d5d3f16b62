"""Access units of one camera stream into GOP-aligned segments and gaps: a pure state machine, no I/O.

`push()` takes packets in the order the bus delivers them and returns what became final: `SegmentCut`s to mux and
store, and `GapFound`s to index, each with the ack token of the newest message it accounts for (the consumer acks
with AckAll after storing it, so everything before is acknowledged too).

Rules, in the order they apply to a packet:

- Duplicates (a redelivery, or a replay of what the index already holds) and packets of a session that has ended
  are skipped: the same frame never lands in two segments.
- A *run* is a stretch of one session with no packet missing. It ends at a session change (gap cause from the
  camera status: `camera_offline` if ingest said so, else `ingest_failover`), a hole in `seq` (`unknown`, or
  `recorder_failover` when the packets expired from the bus before a recorder stored them, or `corrupt_data` when a
  message did not decode), a stall (no media for `stall_s`, `camera_offline`), or a configuration change on a
  non-keyframe (`corrupt_data`). At the end of a run the open segment is cut where it is.
- A segment starts with a keyframe; until one arrives packets are dropped into the pending gap; a stream that sends
  none for `no_keyframe_s` is a `no_keyframe` gap, written in chunks of `gap_flush_s`.
- A segment is cut at the first keyframe at or after `target_s` (or when the codec configuration changes, which
  gives the next segment a new init segment), or where it stands at `max_segment_s` without a keyframe.
- Timestamps: decode times must increase; a missing or backward one, or a jump of more than `clock_jump_s` that
  the capture clock does not confirm, is repaired (one frame after the previous, the timeline re-anchored there)
  and counted in the segment's `repaired_timestamps`. A long jump that the capture clock confirms is a stall.
- Wall clock: a segment starts at its first frame's capture time (so a replacement recorder given the same packets
  computes the same start, hence the same object key) and ends where the next one starts when the two clocks agree
  within `clock_jump_s`; otherwise it ends after its media duration and the difference is a `clock_jump` gap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from argus_core.bus.messages import CodecConfig, GapCause, MediaPacket, StreamName
from argus_recorder.muxer import MuxPacket

T = TypeVar("T")

NS = 1_000_000_000
_MISSING_LIMIT = 1 << 62  # ingest's stand-in for "no timestamp" is FFmpeg's AV_NOPTS_VALUE (-2**63)
_ENDED_SESSIONS = 16


@dataclass(frozen=True, slots=True)
class Policy:
    target_s: float = 6.0
    max_segment_s: float = 30.0
    stall_s: float = 5.0
    idle_flush_s: float = 10.0
    clock_jump_s: float = 1.0
    no_keyframe_s: float = 10.0
    gap_flush_s: float = 30.0
    max_cts_s: float = 10.0  # composition offsets (pts - dts) beyond this are treated as corrupt
    stale_session_packets: int = 50  # this many packets of an ended session in a row and it is taken back


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The newest thing the index holds for this camera stream: where a new owner carries on."""

    session: str
    last_seq: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class SegmentCut(Generic[T]):
    camera: str
    stream: StreamName
    session: str
    config: CodecConfig
    packets: tuple[MuxPacket, ...]
    start_ns: int
    end_ns: int
    duration_ns: int  # media duration (what the file plays)
    frames: int
    keyframes: int
    first_seq: int
    last_seq: int
    time_trusted: bool
    repaired_timestamps: int
    last_capture_ns: int
    ack: T


@dataclass(frozen=True, slots=True)
class GapFound(Generic[T]):
    camera: str
    stream: StreamName
    start_ns: int
    end_ns: int
    cause: GapCause
    detail: str
    session: str | None  # the session and newest seq this gap accounts for (a new owner resumes after it)
    last_seq: int | None
    ack: T | None


Event = SegmentCut[T] | GapFound[T]
CauseLookup = Callable[[str, int, int], tuple[GapCause, str]]
"""(camera, from_ns, to_ns) -> the cause of a session change in that interval, and a detail."""


@dataclass(slots=True)
class _Frame(Generic[T]):
    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool
    capture_ns: int
    trusted: bool
    seq: int
    repaired: bool
    token: T


@dataclass(slots=True)
class _PendingGap(Generic[T]):
    start_ns: int
    cause: GapCause
    detail: str
    end_ns: int  # end of the last packet dropped into it (or its start)
    dropped: int = 0
    first_drop_ns: int | None = None  # capture of the first packet dropped in the current run
    token: T | None = None
    session: str | None = None
    last_seq: int | None = None


@dataclass(slots=True)
class _Run:
    """Timestamp state of one run (one session, no packet missing)."""

    session: str
    tb_num: int
    tb_den: int
    prev_dts: int | None = None
    prev_capture: int = 0
    offset: int = 0
    frame_ticks: int = 0


@dataclass(slots=True)
class _Stats:
    duplicates: int = 0
    stale: int = 0
    dropped: int = 0
    repaired: int = 0
    empty: int = 0


def _valid(ts: int) -> bool:
    return -_MISSING_LIMIT < ts < _MISSING_LIMIT


class Segmenter(Generic[T]):
    """Segments and gaps of one camera stream, from its packets in bus order."""

    def __init__(
        self,
        camera: str,
        stream: StreamName,
        policy: Policy,
        cause_lookup: CauseLookup,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.camera = camera
        self.stream = stream
        self.policy = policy
        self._cause_lookup = cause_lookup
        self.stats = _Stats()
        self._frames: list[_Frame[T]] = []
        self._config: CodecConfig | None = None
        self._seg_config: CodecConfig | None = None
        self._seg_run: _Run | None = None
        self._run: _Run | None = None
        self._session: str | None = None
        self._last_seq = -1
        self._last_end_ns: int | None = None  # end of the newest segment or gap emitted (or the checkpoint's)
        self._ended: OrderedDict[str, int] = OrderedDict()  # ended session -> its newest seq
        self._stale_run = 0
        self._gap: _PendingGap[T] | None = None
        self._waiting_since: int | None = None  # capture of the first packet dropped since the last segment
        self._resume_cause: tuple[GapCause, str] | None = None
        self._corrupt_messages = 0
        self._fresh = checkpoint is not None
        if checkpoint is not None:
            self._session = checkpoint.session
            self._last_seq = checkpoint.last_seq
            self._last_end_ns = checkpoint.end_ns
            self._resume_cause = ("recorder_failover", "recording resumed mid-GOP after a change of recorder")

    # --- public ---------------------------------------------------------------------------------------------------

    @property
    def open_frames(self) -> int:
        return len(self._frames)

    def corrupt(self) -> None:
        """A message on this stream did not decode: the hole it leaves is `corrupt_data`."""
        self._corrupt_messages += 1

    def push(self, pkt: MediaPacket, token: T) -> list[Event[T]]:
        events: list[Event[T]] = []
        if not self._accept(pkt, events):
            return events
        self._last_seq = pkt.seq
        if pkt.data:
            self._place(pkt, token, events)
        else:
            self.stats.empty += 1
        self._fresh = False
        return events

    def tick(self, idle_s: float) -> list[Event[T]]:
        """No packet for `idle_s`: a camera that went quiet has its open segment stored and its drops accounted."""
        events: list[Event[T]] = []
        if idle_s < self.policy.idle_flush_s:
            return events
        if self._frames:
            self._emit_segment(events, next_frame=None)
            self._run = None
            self._resume_cause = ("camera_offline", f"no media for at least {self.policy.idle_flush_s:g} s")
        gap = self._gap
        if gap is not None and gap.token is not None:
            # Account for what was dropped so far (it gets acked) and keep measuring the hole after it.
            self._emit_gap(events, gap.end_ns)
            self._gap = _PendingGap(gap.end_ns, gap.cause, gap.detail, gap.end_ns)
        return events

    def handover(self) -> list[Event[T]]:
        """Stop for another owner: the open segment's complete GOPs are stored, the rest stays unacked for it."""
        events: list[Event[T]] = []
        frames = self._frames
        last_key = max((i for i, f in enumerate(frames) if f.keyframe), default=0)
        if last_key > 0:
            self._frames = frames[:last_key]
            self._emit_segment(events, next_frame=frames[last_key])
        self._frames = []
        return events

    # --- admission ------------------------------------------------------------------------------------------------

    def _accept(self, pkt: MediaPacket, events: list[Event[T]]) -> bool:
        """Skip duplicates and stale sessions; handle a session change or a hole. False: skip the packet."""
        if pkt.session == self._session:
            self._stale_run = 0
            if pkt.seq <= self._last_seq:
                self.stats.duplicates += 1
                return False
            if pkt.seq > self._last_seq + 1:
                self._on_hole(pkt, events)
            return True
        ended_seq = self._ended.get(pkt.session)
        if ended_seq is not None:
            self._stale_run += 1
            if pkt.seq <= ended_seq or self._stale_run < self.policy.stale_session_packets:
                self.stats.stale += 1
                return False
            del self._ended[pkt.session]  # only the "ended" session is still sending: it is the live one
        self._on_session_change(pkt, events)
        return True

    def _on_session_change(self, pkt: MediaPacket, events: list[Event[T]]) -> None:
        old = self._session
        waiting_since = self._waiting_since
        self._end_run(events)
        if old is not None:
            self._ended[old] = self._last_seq
            while len(self._ended) > _ENDED_SESSIONS:
                self._ended.popitem(last=False)
        self._session = pkt.session
        self._last_seq = pkt.seq - 1
        self._stale_run = 0
        if old is None:
            return  # the first packet this camera ever showed us: nothing before it to miss
        start = self._gap.start_ns if self._gap is not None else self._last_end_ns
        if start is None:
            start = waiting_since
        if start is None:
            return
        cause, detail = self._cause_lookup(self.camera, start, pkt.capture_ns)
        detail = detail or f"ingest session {old} ended, {pkt.session} started"
        if self._fresh:
            detail += " (found when this recorder took the camera over)"
        self._open_gap(start, cause, detail)

    def _on_hole(self, pkt: MediaPacket, events: list[Event[T]]) -> None:
        missing = pkt.seq - self._last_seq - 1
        waiting_since = self._waiting_since
        self._end_run(events)
        start = self._gap.start_ns if self._gap is not None else self._last_end_ns
        if start is None:
            start = waiting_since if waiting_since is not None else pkt.capture_ns
        what = f"{missing} packet(s) missing (seq {self._last_seq + 1}..{pkt.seq - 1})"
        cause: GapCause
        if self._corrupt_messages:
            cause, detail = "corrupt_data", f"{what}: {self._corrupt_messages} message(s) did not decode"
            self._corrupt_messages = 0
        elif self._fresh:
            cause, detail = "recorder_failover", f"{what}: they left the bus before a recorder stored them"
        else:
            cause, detail = "unknown", f"{what} on the bus"
        self._open_gap(start, cause, detail)

    # --- placement ------------------------------------------------------------------------------------------------

    def _place(self, pkt: MediaPacket, token: T, events: list[Event[T]]) -> None:
        config = pkt.config
        if config is not None and self._config is not None and config != self._config:
            if pkt.keyframe and self._frames:
                self._config = config
                self._append(pkt, token, events, force_cut=True)  # a boundary and a new init segment; no gap
                return
            if not pkt.keyframe:
                self._end_run(events)
                start = self._last_end_ns if self._last_end_ns is not None else pkt.capture_ns
                self._open_gap(
                    start,
                    "corrupt_data",
                    f"codec configuration changed on a non-keyframe ({config.codec} {config.width}x{config.height})",
                )
        if config is not None:
            self._config = config
        self._append(pkt, token, events, force_cut=False)

    def _append(self, pkt: MediaPacket, token: T, events: list[Event[T]], *, force_cut: bool) -> None:
        config = self._config
        if config is None:
            self._drop(pkt, token, events, "no codec configuration has arrived")
            return
        run = self._run
        if (
            run is None
            or run.session != pkt.session
            or (run.tb_num, run.tb_den) != (config.time_base_num, config.time_base_den)
        ):
            run = self._run = _Run(pkt.session, config.time_base_num, config.time_base_den)
        dts, pts, repaired = self._timestamps(run, pkt)
        if self._frames and run is self._seg_run:
            step_ns = self._ticks_to_ns(run, dts - self._frames[-1].dts)
            if step_ns > self.policy.stall_s * NS:
                self._end_run(events)
                start = self._last_end_ns if self._last_end_ns is not None else pkt.capture_ns
                self._open_gap(start, "camera_offline", f"no media for {step_ns / NS:.1f} s (the stream stalled)")
                run = self._run = _Run(pkt.session, config.time_base_num, config.time_base_den)
                dts, pts, repaired = self._timestamps(run, pkt)
        if repaired:
            self.stats.repaired += 1
        frame = _Frame(pkt.data, pts, dts, 0, pkt.keyframe, pkt.capture_ns, pkt.time_trusted, pkt.seq, repaired, token)
        if not self._frames:
            if pkt.keyframe:
                self._start_segment(frame, events)
            else:
                self._drop(pkt, token, events, "")
            return
        seg_run = self._seg_run if self._seg_run is not None else run
        length_ns = self._ticks_to_ns(seg_run, dts - self._frames[0].dts) if seg_run is run else 0
        if pkt.keyframe and (force_cut or length_ns >= self.policy.target_s * NS):
            self._emit_segment(events, next_frame=frame)
            self._start_segment(frame, events)
            return
        self._frames[-1].duration = max(1, dts - self._frames[-1].dts)
        if length_ns >= self.policy.max_segment_s * NS:
            # No keyframe for too long: store what there is, then wait for one.
            self._emit_segment(events, next_frame=None)
            start = self._last_end_ns if self._last_end_ns is not None else pkt.capture_ns
            self._open_gap(start, "no_keyframe", f"no keyframe within {self.policy.max_segment_s:g} s")
            self._drop(pkt, token, events, "")
            return
        self._frames.append(frame)

    def _start_segment(self, frame: _Frame[T], events: list[Event[T]]) -> None:
        last_end = self._last_end_ns
        if self._gap is None and last_end is not None and frame.capture_ns - last_end > self.policy.clock_jump_s * NS:
            cause, detail = self._resume_cause or ("unknown", "")
            gap_s = (frame.capture_ns - last_end) / NS
            self._open_gap(last_end, cause, detail or f"recording resumed after {gap_s:.1f} s without media")
        if self._gap is not None:
            self._emit_gap(events, frame.capture_ns)
        self._frames = [frame]
        self._seg_config = self._config
        self._seg_run = self._run
        self._waiting_since = None
        self._resume_cause = None

    def _drop(self, pkt: MediaPacket, token: T, events: list[Event[T]], why: str) -> None:
        """A packet no segment can hold (no keyframe yet): it goes into the pending gap."""
        self.stats.dropped += 1
        end_ns = pkt.capture_ns + self._frame_ns(self._run)
        if self._waiting_since is None:
            self._waiting_since = pkt.capture_ns
        since = self._waiting_since
        waited = pkt.capture_ns - since
        no_keyframe = self.policy.no_keyframe_s * NS
        reason = why or "the stream sends no keyframe"
        if self._gap is None and self._resume_cause is not None:
            cause, detail = self._resume_cause
            self._open_gap(self._last_end_ns if self._last_end_ns is not None else since, cause, detail)
        if self._gap is None:
            if waited < no_keyframe:
                return  # joining mid-GOP with nothing recorded before: acked with the first segment
            self._open_gap(since, "no_keyframe", reason)
        gap = self._gap
        assert gap is not None
        if gap.cause != "no_keyframe" and waited >= no_keyframe:
            # The earlier hole ends where this stretch of media began; from there on it is a missing keyframe.
            boundary = max(gap.start_ns, since)
            if boundary > gap.start_ns:
                self._emit_gap(events, boundary, with_ack=False)
            self._gap = gap = _PendingGap(boundary, "no_keyframe", reason, boundary)
        gap.dropped += 1
        gap.end_ns = max(gap.end_ns, end_ns)
        gap.token = token
        gap.session = pkt.session
        gap.last_seq = pkt.seq
        if gap.cause == "no_keyframe" and gap.end_ns - gap.start_ns >= self.policy.gap_flush_s * NS:
            self._emit_gap(events, gap.end_ns)
            self._gap = _PendingGap(gap.end_ns, "no_keyframe", gap.detail, gap.end_ns)

    # --- ends -----------------------------------------------------------------------------------------------------

    def _end_run(self, events: list[Event[T]]) -> None:
        if self._frames:
            self._emit_segment(events, next_frame=None)
        self._run = None
        self._waiting_since = None
        self._resume_cause = None

    def _open_gap(self, start_ns: int, cause: GapCause, detail: str) -> None:
        if self._gap is None:  # one hole at a time: the first cause stands
            self._gap = _PendingGap(start_ns, cause, detail, start_ns)
        self._resume_cause = None

    def _emit_gap(self, events: list[Event[T]], end_ns: int, *, with_ack: bool = True) -> None:
        gap, self._gap = self._gap, None
        if gap is None:
            return
        start, end = min(gap.start_ns, end_ns), max(gap.start_ns, end_ns)
        events.append(
            GapFound(
                self.camera,
                self.stream,
                start,
                end,
                gap.cause,
                gap.detail,
                gap.session if with_ack else None,
                gap.last_seq if with_ack else None,
                gap.token if with_ack else None,
            )
        )
        self._last_end_ns = end if self._last_end_ns is None else max(self._last_end_ns, end)

    def _emit_segment(self, events: list[Event[T]], next_frame: _Frame[T] | None) -> None:
        frames, self._frames = self._frames, []
        config, run = self._seg_config, self._seg_run
        if not frames or config is None or run is None:
            return
        first, last = frames[0], frames[-1]
        if next_frame is not None and self._run is run:
            last.duration = max(1, next_frame.dts - last.dts)
        elif last.duration <= 0:
            last.duration = max(1, run.frame_ticks or self._ns_to_ticks(run, NS // 25))
        duration_ns = self._ticks_to_ns(run, last.dts + last.duration - first.dts)
        start_ns = first.capture_ns
        end_ns = start_ns + duration_ns
        jump: GapFound[T] | None = None
        if next_frame is not None:
            delta = next_frame.capture_ns - end_ns
            if abs(delta) <= self.policy.clock_jump_s * NS:
                end_ns = next_frame.capture_ns
            else:
                direction = "forward" if delta > 0 else "back"
                jump = GapFound(
                    self.camera,
                    self.stream,
                    min(end_ns, next_frame.capture_ns),
                    max(end_ns, next_frame.capture_ns),
                    "clock_jump",
                    f"the capture clock stepped {direction} by {abs(delta) / 1e6:.0f} ms against the media clock",
                    run.session,
                    last.seq,
                    last.token,
                )
        base = first.dts
        events.append(
            SegmentCut(
                camera=self.camera,
                stream=self.stream,
                session=run.session,
                config=config,
                packets=tuple(MuxPacket(f.data, f.pts - base, f.dts - base, f.duration, f.keyframe) for f in frames),
                start_ns=start_ns,
                end_ns=end_ns,
                duration_ns=duration_ns,
                frames=len(frames),
                keyframes=sum(1 for f in frames if f.keyframe),
                first_seq=first.seq,
                last_seq=last.seq,
                time_trusted=all(f.trusted for f in frames),
                repaired_timestamps=sum(1 for f in frames if f.repaired),
                last_capture_ns=last.capture_ns,
                ack=last.token,
            )
        )
        self._last_end_ns = end_ns
        if jump is not None and next_frame is not None:
            events.append(jump)
            self._last_end_ns = next_frame.capture_ns

    # --- timestamps -----------------------------------------------------------------------------------------------

    def _timestamps(self, run: _Run, pkt: MediaPacket) -> tuple[int, int, bool]:
        """Output (dts, pts) on the run's timeline, and whether they had to be repaired."""
        repaired = False
        in_dts: int | None = pkt.dts if _valid(pkt.dts) else None
        in_pts: int | None = pkt.pts if _valid(pkt.pts) else None
        if in_dts is None:
            repaired = True
            in_dts = in_pts
        if pkt.duration > 0:
            run.frame_ticks = pkt.duration
        if run.prev_dts is None:
            dts = in_dts if in_dts is not None else 0
            run.offset = 0
        else:
            # A step up to `clock_jump_s` is a frame (frame rates vary; arrival times are too jittery to judge it);
            # a longer one must be confirmed by the capture clock (a real pause), else it is corrupt. A repaired
            # packet goes one frame after the previous and the timeline is re-anchored on it: a one-off glitch
            # costs two repairs, a lasting jump one.
            candidate = in_dts + run.offset if in_dts is not None else None
            step = candidate - run.prev_dts if candidate is not None else 0
            cap_step = self._ns_to_ticks(run, pkt.capture_ns - run.prev_capture)
            small = self._ns_to_ticks(run, int(self.policy.clock_jump_s * NS))
            if candidate is not None and 0 < step and (step <= small or abs(step - cap_step) <= small):
                dts = candidate
                if step <= small and pkt.duration <= 0:
                    run.frame_ticks = step
            else:
                repaired = True
                dts = run.prev_dts + max(1, run.frame_ticks or self._ns_to_ticks(run, NS // 25))
                if in_dts is not None:
                    run.offset = dts - in_dts
        pts = dts
        if in_pts is not None:
            shifted = in_pts + run.offset
            if 0 <= shifted - dts <= self._ns_to_ticks(run, int(self.policy.max_cts_s * NS)):
                pts = shifted
            else:
                repaired = True
        else:
            repaired = True
        run.prev_dts = dts
        run.prev_capture = pkt.capture_ns
        return dts, pts, repaired

    @staticmethod
    def _ticks_to_ns(run: _Run, ticks: int) -> int:
        return ticks * run.tb_num * NS // run.tb_den

    @staticmethod
    def _ns_to_ticks(run: _Run, ns: int) -> int:
        return ns * run.tb_den // (run.tb_num * NS)

    def _frame_ns(self, run: _Run | None) -> int:
        if run is None or run.frame_ticks <= 0:
            return NS // 25
        return self._ticks_to_ns(run, run.frame_ticks)
