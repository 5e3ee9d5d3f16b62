"""One ingest session (one RTSP connection) of one camera stream: demuxed units in, `MediaPacket`s out.

A pure state machine, no I/O, fed on the event loop with what the demux thread read. Rules:

- A session's first packet is a keyframe carrying its `CodecConfig`: units before the first keyframe are skipped
  (counted), so a subscriber or recorder can start at the first message of a session.
- Every keyframe carries the configuration; it changes when the keyframe's in-band parameter sets differ from the
  current ones (a camera switching resolution), with the picture size read from the new SPS.
- A unit without a presentation time is skipped and counted, with one exception: FFmpeg's RTSP demuxer gives the
  very first unit of a connection no timestamps (ffprobe shows the same), although it counts a connection's times
  from that unit's RTP timestamp (time 0). When the next unit comes exactly one frame duration after 0, the first
  one was at 0 and gets it (counted as repaired); otherwise (the camera skipped frames, or its first RTCP report
  set the origin) it is skipped like the others and the session starts at the next keyframe. A missing decode
  time is the presentation time (RTSP cameras send no B-frames, and FFmpeg fills it in when they do).
- `seq` counts published packets from 0; units the demux thread had to drop (the bus fell behind) leave a hole in
  `seq` of their number, and the session then waits for a keyframe again.
- Capture time (see `clock`): the first units of a session wait until the clock has settled, that is until the
  camera's first RTCP sender report has arrived and `settle_min` has passed (or `settle_max` has passed without
  one), so that the first packets get the same clock as the later ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from argus_core.bus.messages import Codec, CodecConfig, MediaPacket, StreamName
from argus_ingest import nal
from argus_ingest.clock import NS, CaptureClock, ClockPolicy


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the demuxer knows of a stream when the connection opens."""

    codec: Codec
    width: int
    height: int
    extradata: bytes
    time_base_num: int
    time_base_den: int


@dataclass(slots=True)
class Unit:
    """One demuxed access unit, as the demux thread read it."""

    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool
    data: bytes
    arrival_ns: int  # our wall clock when it was read
    realtime_us: int | None  # the container's start_time_realtime at that moment
    lost: int = 0  # units the demux thread dropped just before this one


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    clock: ClockPolicy = field(default_factory=ClockPolicy)
    settle_min_ns: int = 300_000_000
    settle_max_ns: int = NS


@dataclass(slots=True)
class _Held:
    unit: Unit
    pts: int
    dts: int
    media_ns: int
    config: CodecConfig | None


@dataclass(slots=True)
class SessionCounters:
    published: int = 0
    no_pts: int = 0  # skipped: no presentation time
    repaired: int = 0  # the leading unit's timestamps inferred from the next one
    before_keyframe: int = 0  # skipped while waiting for a keyframe
    lost: int = 0  # dropped by the demux thread (the bus fell behind)
    keyframes: int = 0
    config_changes: int = 0


class Session:
    def __init__(
        self,
        camera: str,
        stream: StreamName,
        session: str,
        info: StreamInfo,
        policy: SessionPolicy | None = None,
    ) -> None:
        self.camera = camera
        self.stream: StreamName = stream
        self.id = session
        self.info = info
        self.policy = policy or SessionPolicy()
        self.clock = CaptureClock(self.policy.clock)
        self.counters = SessionCounters()
        self.config: CodecConfig | None = None
        self.last_keyframe_ns = 0
        self._tb_num = info.time_base_num
        self._tb_den = info.time_base_den
        self._extradata_params = nal.extradata_parameter_sets(info.codec, info.extradata)
        self._params: tuple[bytes, ...] | None = None
        self._seq = 0
        self._started = False  # a keyframe has been accepted
        self._need_key = True
        self._lead: Unit | None = None
        self._seen_pts = False
        self._settled = False
        self._first_arrival: int | None = None
        self._held: list[_Held] = []

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def next_seq(self) -> int:
        return self._seq

    def media_ns(self, pts: int) -> int:
        return pts * self._tb_num * NS // self._tb_den

    def push(self, unit: Unit) -> list[MediaPacket]:
        """What becomes publishable with `unit` (in order; often one packet, none while settling)."""
        self.clock.set_realtime(unit.realtime_us)
        if unit.lost:
            self.counters.lost += unit.lost
            if self._started:
                self._seq += unit.lost
            self._need_key = True
        out: list[MediaPacket] = []
        if unit.pts is None:
            if self._lead is None and not self._seen_pts:
                self._lead = unit
            else:
                self.counters.no_pts += 1
            return out
        self._seen_pts = True
        if self._lead is not None:
            lead, self._lead = self._lead, None
            if lead.duration > 0 and unit.pts - lead.duration == 0:
                lead.pts = lead.dts = 0
                self.counters.repaired += 1
                self._accept(lead, lead.pts, out)
            else:
                self.counters.no_pts += 1
        self._accept(unit, unit.pts, out)
        return out

    def finish(self) -> list[MediaPacket]:
        """At the end of the session: whatever was still waiting for the clock to settle."""
        out: list[MediaPacket] = []
        if self._held:
            self._settle(out)
        return out

    # --- internals ----------------------------------------------------------------------------------------------

    def _accept(self, unit: Unit, pts: int, out: list[MediaPacket]) -> None:
        dts = unit.dts if unit.dts is not None else pts
        media_ns = self.media_ns(pts)
        self.clock.sample(media_ns, unit.arrival_ns)
        if self._need_key:
            if not unit.keyframe:
                self.counters.before_keyframe += 1
                return
            self._need_key = False
            self._started = True
        config = self._config_for(unit.data) if unit.keyframe else None
        held = _Held(unit, pts, dts, media_ns, config)
        if self._settled:
            out.append(self._packet(held))
            return
        self._held.append(held)
        if self._first_arrival is None:
            self._first_arrival = unit.arrival_ns
        elapsed = unit.arrival_ns - self._first_arrival
        if (self.clock.has_rtcp and elapsed >= self.policy.settle_min_ns) or elapsed >= self.policy.settle_max_ns:
            self._settle(out)

    def _settle(self, out: list[MediaPacket]) -> None:
        self._settled = True
        held, self._held = self._held, []
        out.extend(self._packet(h) for h in held)

    def _packet(self, held: _Held) -> MediaPacket:
        unit = held.unit
        capture_ns, trusted = self.clock.capture(held.media_ns)
        if unit.keyframe:
            self.counters.keyframes += 1
            self.last_keyframe_ns = capture_ns
        packet = MediaPacket(
            camera=self.camera,
            stream=self.stream,
            session=self.id,
            seq=self._seq,
            pts=held.pts,
            dts=held.dts,
            duration=unit.duration,
            keyframe=unit.keyframe,
            capture_ns=capture_ns,
            time_trusted=trusted,
            data=unit.data,
            config=held.config,
        )
        self._seq += 1
        self.counters.published += 1
        return packet

    def _config_for(self, data: bytes) -> CodecConfig:
        codec = self.info.codec
        params = nal.parameter_sets(codec, nal.split_annexb(data))
        if params and params != self._params:
            if self._params is not None:
                self.counters.config_changes += 1
            self._params = params
            self.config = self._make_config(params)
        elif self.config is None:
            self._params = self._extradata_params or None
            self.config = self._make_config(self._extradata_params)
        return self.config

    def _make_config(self, params: tuple[bytes, ...]) -> CodecConfig:
        info = self.info
        size = nal.size_from_parameter_sets(info.codec, params) if params else None
        width, height = size if size is not None else (info.width, info.height)
        extradata = info.extradata if (not params or params == self._extradata_params) else nal.annexb(params)
        return CodecConfig(
            codec=info.codec,
            width=width,
            height=height,
            extradata=extradata,
            time_base_num=self._tb_num,
            time_base_den=self._tb_den,
        )
