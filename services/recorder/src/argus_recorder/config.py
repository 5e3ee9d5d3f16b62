"""Configuration of the recorder service, read from ARGUS_* environment variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from argus_core.bus.messages import CameraId, StreamName
from argus_core.db import DatabaseConfig
from argus_core.runtime import RuntimeConfig
from argus_core.storage import S3Config
from argus_recorder.segmenter import Policy

Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class RecorderSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_RECORDER_*`: what to record, how segments are cut, where they wait when storage is down."""

    # Which stream of each camera is recorded.
    stream: StreamName = "main"
    # Cameras to record; empty: every enabled camera of the register (the `cameras` table), re-read periodically.
    cameras: tuple[CameraId, ...] = ()
    registry_refresh_s: Seconds = 10.0
    # Segments are cut at the first keyframe at or after the target; a GOP longer than the maximum is cut anyway.
    segment_target_s: Annotated[float, msgspec.Meta(ge=1, le=60)] = 6.0
    segment_max_s: Annotated[float, msgspec.Meta(ge=2, le=300)] = 30.0
    # A pause in the media this long is a gap (`camera_offline`); a camera silent this long has its segment stored.
    stall_s: Annotated[float, msgspec.Meta(ge=1, le=600)] = 5.0
    idle_flush_s: Annotated[float, msgspec.Meta(ge=1, le=600)] = 10.0
    # Wall and media clocks disagreeing by more than this at a boundary is a `clock_jump` gap.
    clock_jump_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # A stream that sends no keyframe for this long is a `no_keyframe` gap, indexed in pieces of `gap_flush_s`.
    no_keyframe_s: Annotated[float, msgspec.Meta(ge=1, le=600)] = 10.0
    gap_flush_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    # The local spool for segments and rows while S3 or Postgres is down (created when first needed).
    spool_dir: str = "/var/lib/argus/recorder/spool"
    spool_max_bytes: Annotated[int, msgspec.Meta(ge=1_000_000)] = 2 * 1024**3
    drain_interval_s: Seconds = 2.0
    upload_timeout_s: Seconds = 10.0
    db_timeout_s: Seconds = 5.0
    # JetStream consumption: messages per pull, pause between pulls (a second: a third less CPU in the recorder and in
    # nats-server than a quarter, for half a second more capture-to-indexed latency), redelivery after, in flight.
    fetch_batch: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 512
    fetch_interval_s: Annotated[float, msgspec.Meta(ge=0, le=5)] = 1.0
    ack_wait_s: Annotated[float, msgspec.Meta(ge=10, le=3600)] = 90.0
    max_ack_pending: Annotated[int, msgspec.Meta(ge=100)] = 20_000
    # A camera's consumer that nobody pulls from for this long (the camera was removed, or is recorded no more) is
    # deleted by the server; made again, it starts at the camera's oldest media on the bus.
    consumer_idle_s: Annotated[float, msgspec.Meta(ge=60, le=30 * 86400)] = 3600.0
    # Threads that mux segments (FFmpeg releases the GIL while it writes).
    mux_threads: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2

    def policy(self) -> Policy:
        return Policy(
            target_s=self.segment_target_s,
            max_segment_s=max(self.segment_max_s, self.segment_target_s),
            stall_s=self.stall_s,
            idle_flush_s=self.idle_flush_s,
            clock_jump_s=self.clock_jump_s,
            no_keyframe_s=self.no_keyframe_s,
            gap_flush_s=self.gap_flush_s,
        )


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    s3: S3Config
    recorder: RecorderSettings = msgspec.field(default_factory=RecorderSettings)
