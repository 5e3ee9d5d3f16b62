"""Every message that crosses the bus, as frozen msgspec Structs.

Schema evolution, so that pods of two versions can share a bus during a rolling upgrade:
- a new field is added at the end of its Struct with a default; a reader that does not know it ignores it;
- a field's type is never changed and a field is never renamed; retire it by leaving it with its default;
- a union member is a tagged Struct (`tag=` is its stable wire name); new members may be added, tags never reused;
- media travels as MessagePack (binary payloads, compact), everything else as JSON (readable with `nats sub`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

CameraId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
StreamName = Literal["main", "sub"]
Codec = Literal["h264", "h265"]


# --- media -----------------------------------------------------------------------------------------------------


class CodecConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What a decoder or muxer needs to start: carried on every keyframe so a late joiner never waits."""

    codec: Codec
    width: int
    height: int
    extradata: bytes = b""  # avcC / hvcC as the demuxer gave it, or Annex B parameter sets
    time_base_num: int = 1
    time_base_den: int = 90000


class MediaPacket(msgspec.Struct, frozen=True, kw_only=True):
    """One access unit (a whole coded picture) of one camera stream, exactly as the camera sent it."""

    camera: CameraId
    stream: StreamName
    session: str  # changes on every (re)connection of ingest to the camera
    seq: int  # counts packets within a session, from 0; a hole is a lost packet
    pts: int
    dts: int
    duration: int
    keyframe: bool
    capture_ns: int  # wall-clock capture time, UTC nanoseconds
    time_trusted: bool  # capture time from the camera's RTCP sender reports with a known clock offset
    data: bytes
    config: CodecConfig | None = None  # present on keyframes and whenever the configuration changes


class MediaBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive packets of one ingest session of one camera stream, as ingest stores them for recording.

    A batch ends right after a keyframe (so that a recorder sees the keyframe that closes a GOP as soon as ingest
    does), or when its first packet is `batch_max_s` old, or at `batch_max_bytes`; also when the session ends.
    """

    camera: CameraId
    stream: StreamName
    session: str
    packets: tuple[MediaPacket, ...]  # in seq order, all of `session`; a hole in seq is a packet ingest lost


# --- live view -------------------------------------------------------------------------------------------------


class LiveDemand(msgspec.Struct, frozen=True, kw_only=True):
    """A live view pod wants a camera stream's access units on the live subject: ingest publishes them for `ttl_s`
    after each demand (a viewer pod asks again well before that), and no longer once every asker said `ttl_s=0`."""

    camera: CameraId
    stream: StreamName
    viewer: str  # the asking pod: each pod's demand runs out (or is withdrawn) on its own
    ttl_s: float = 10.0
    catchup: bool = False  # answer on the request's inbox with the current GOP so far (`LiveCatchup`)


class LiveCatchup(msgspec.Struct, frozen=True, kw_only=True):
    """The pulling ingest pod's answer to a `LiveDemand` with `catchup`: the packets of the current GOP, from its
    keyframe up to the last one published; empty when there is none to give (not online yet, a GOP larger than a
    message): the asker then starts at the next live keyframe."""

    camera: CameraId
    stream: StreamName
    pod: str
    session: str = ""
    packets: tuple[MediaPacket, ...] = ()


# --- cameras ---------------------------------------------------------------------------------------------------


CameraState = Literal["connecting", "online", "offline", "disabled"]


class CameraStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Health of one camera as its ingest pod sees it; the latest is also kept in the camera-status KV bucket."""

    camera: CameraId
    state: CameraState
    at_ns: int
    ingest_pod: str = ""
    error: str = ""
    fps: float = 0.0
    bitrate_bps: float = 0.0
    last_keyframe_ns: int = 0
    clock_offset_ms: float | None = None
    codec: Codec | None = None
    width: int = 0
    height: int = 0
    session: str = ""  # the ingest session (MediaPacket.session) this status is about
    previous_pod: str = ""  # on the first status after a pod took the camera over: who pulled it before
    takeover: Literal["", "released", "expired"] = ""  # how: handed over, or its lease ran out (that pod died)
    time_trusted: bool = False  # capture times come from the camera's RTCP clock, within tolerance of ours


class CameraChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The camera registry changed: services reload that camera's row."""

    camera: CameraId
    change: Literal["upsert", "delete"]
    at_ns: int


# --- recording -------------------------------------------------------------------------------------------------


GapCause = Literal[
    "camera_offline",
    "ingest_failover",
    "recorder_failover",
    "corrupt_data",
    "no_keyframe",
    "clock_jump",
    "unknown",
    "spool_overflow",  # the recorder's local spool filled during a storage outage and dropped its oldest footage
]


class SegmentRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """A segment is safely in object storage and indexed."""

    camera: CameraId
    stream: StreamName
    start_ns: int
    end_ns: int
    object_key: str
    bytes: int
    sha256: str
    frames: int
    keyframes: int
    codec: Codec
    width: int
    height: int
    time_trusted: bool


class RecordingGap(msgspec.Struct, frozen=True, kw_only=True):
    camera: CameraId
    stream: StreamName
    start_ns: int
    end_ns: int
    cause: GapCause
    detail: str = ""


# --- PTZ -------------------------------------------------------------------------------------------------------


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who asked: the subject and roles of a verified token, and the client they used."""

    subject: str
    roles: tuple[str, ...] = ()
    client: str = ""


class PtzContinuousMove(msgspec.Struct, frozen=True, kw_only=True, tag="continuous"):
    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    timeout_s: float = 1.0


class PtzAbsoluteMove(msgspec.Struct, frozen=True, kw_only=True, tag="absolute"):
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    speed: float | None = None


class PtzRelativeMove(msgspec.Struct, frozen=True, kw_only=True, tag="relative"):
    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    speed: float | None = None


class PtzStop(msgspec.Struct, frozen=True, kw_only=True, tag="stop"):
    pan_tilt: bool = True
    zoom: bool = True


class PtzGotoPreset(msgspec.Struct, frozen=True, kw_only=True, tag="goto_preset"):
    preset: str
    speed: float | None = None


class PtzSetPreset(msgspec.Struct, frozen=True, kw_only=True, tag="set_preset"):
    name: str
    preset: str | None = None


class PtzRemovePreset(msgspec.Struct, frozen=True, kw_only=True, tag="remove_preset"):
    preset: str


class PtzGotoHome(msgspec.Struct, frozen=True, kw_only=True, tag="goto_home"):
    speed: float | None = None


class PtzSetHome(msgspec.Struct, frozen=True, kw_only=True, tag="set_home"):
    pass


class PtzGetStatus(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    pass


class PtzGetPresets(msgspec.Struct, frozen=True, kw_only=True, tag="presets"):
    pass


class PtzGetCapabilities(msgspec.Struct, frozen=True, kw_only=True, tag="capabilities"):
    pass


class PtzRelease(msgspec.Struct, frozen=True, kw_only=True, tag="release"):
    """Give control back before the lease's idle time (only its holder may)."""


TourName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class PtzTourStep(msgspec.Struct, frozen=True, kw_only=True):
    preset: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    dwell_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 10.0
    speed: float | None = None  # fraction of the camera's speed range; None: the camera's default


class PtzSaveTour(msgspec.Struct, frozen=True, kw_only=True, tag="tour_save"):
    name: TourName
    steps: Annotated[tuple[PtzTourStep, ...], msgspec.Meta(min_length=1, max_length=64)]


class PtzDeleteTour(msgspec.Struct, frozen=True, kw_only=True, tag="tour_delete"):
    name: TourName


class PtzStartTour(msgspec.Struct, frozen=True, kw_only=True, tag="tour_start"):
    name: TourName


class PtzStopTour(msgspec.Struct, frozen=True, kw_only=True, tag="tour_stop"):
    pass


class PtzGetTours(msgspec.Struct, frozen=True, kw_only=True, tag="tours"):
    pass


class PtzSetPark(msgspec.Struct, frozen=True, kw_only=True, tag="park_set"):
    """Go back to `preset` (None: home) after `idle_s` without control; `enabled=False` turns parking off."""

    enabled: bool = True
    idle_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    preset: str | None = None


PtzAction = (
    PtzContinuousMove
    | PtzAbsoluteMove
    | PtzRelativeMove
    | PtzStop
    | PtzGotoPreset
    | PtzSetPreset
    | PtzRemovePreset
    | PtzGotoHome
    | PtzSetHome
    | PtzGetStatus
    | PtzGetPresets
    | PtzGetCapabilities
    | PtzRelease
    | PtzSaveTour
    | PtzDeleteTour
    | PtzStartTour
    | PtzStopTour
    | PtzGetTours
    | PtzSetPark
)


class PtzRange(msgspec.Struct, frozen=True, kw_only=True):
    min: float
    max: float


class PtzCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a camera's PTZ node offers, from ONVIF discovery; `ranges` keys: pan, tilt, zoom (positions),
    pan_translation, tilt_translation, zoom_translation, pan_velocity, tilt_velocity, zoom_velocity, speed,
    zoom_speed, timeout_s."""

    node: str = ""
    profile: str = ""
    max_presets: int = 0
    home_supported: bool = False
    ranges: dict[str, PtzRange] = {}


class PtzTour(msgspec.Struct, frozen=True, kw_only=True):
    name: TourName
    steps: tuple[PtzTourStep, ...]
    active: bool = False


class PtzPark(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = True
    idle_s: float = 300.0
    preset: str | None = None  # None: the home position


class PtzCommand(msgspec.Struct, frozen=True, kw_only=True):
    camera: CameraId
    actor: Actor
    action: PtzAction
    priority: int = 0


class PtzResult(msgspec.Struct, frozen=True, kw_only=True):
    camera: CameraId
    ok: bool
    error: str = ""
    detail: str = ""
    holder: str = ""  # who holds control when refused
    lease_until_ns: int = 0
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    moving: bool = False
    presets: dict[str, str] = {}
    argument: str = ""  # the argument that was out of range, with its valid range below
    valid_min: float | None = None
    valid_max: float | None = None
    capabilities: PtzCapabilities | None = None
    tours: tuple[PtzTour, ...] = ()
    park: PtzPark | None = None
    active_tour: str = ""


# --- audit -----------------------------------------------------------------------------------------------------


Outcome = Literal["success", "denied", "failure"]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Who did or saw what (DPA 2018 s.62). `id` makes delivery idempotent: an event is stored once."""

    id: str
    at_ns: int
    service: str
    actor: Actor
    action: str  # e.g. "live.view.start", "playback.clip", "ptz.move", "retention.sweep"
    outcome: Outcome
    camera: str = ""
    target: str = ""  # an object key, hold id, user, ...
    footage_start_ns: int | None = None
    footage_end_ns: int | None = None
    reason: str = ""
    reference: str = ""  # case, incident or authorisation reference
    details: dict[str, str] = {}


# --- service events --------------------------------------------------------------------------------------------


class ServiceEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something an operator or SRE must know of now: a spool filling, a storage outage, a failover."""

    service: str
    pod: str
    kind: str
    level: Literal["info", "warning", "error", "critical"]
    message: str
    at_ns: int
    camera: str = ""
    details: dict[str, str] = {}
