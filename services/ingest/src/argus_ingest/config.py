"""Configuration of the ingest service, read from ARGUS_* environment variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from argus_core.bus.messages import StreamName
from argus_core.db import DatabaseConfig
from argus_core.runtime import RuntimeConfig
from argus_ingest.camera import PullSettings
from argus_ingest.clock import NS, ClockPolicy
from argus_ingest.session import SessionPolicy

Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class IngestSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_INGEST_*`: what to pull, how patiently, and how packets go onto the bus."""

    # The sites (ids in the `sites` table) whose cameras this pod pulls; empty: every camera of the register. Pods
    # with the same sites share those cameras evenly; set it at every site (a camera without a site is then pulled
    # only by pods without sites).
    sites: tuple[Annotated[str, msgspec.Meta(min_length=1)], ...] = ()
    # Streams pulled from every camera (a camera without a sub stream URL is pulled for main only).
    streams: Annotated[tuple[StreamName, ...], msgspec.Meta(min_length=1)] = ("main",)
    # Pulled streams stored in the MEDIA stream for a recorder (ARGUS_RECORDER_STREAM names the one it records).
    # A pulled stream not listed goes on the bus only live, while a live view watches it: a sub stream for
    # control-room tiles then costs no storage on the bus, and at a site no uplink while nobody watches it.
    record_streams: tuple[StreamName, ...] = ("main",)
    # The register is re-read this often (and soon after a CameraChanged).
    registry_refresh_s: Seconds = 5.0
    # Balancing: leases and heartbeats are rewritten every third of ARGUS_LEASE_TTL_S; this is how often a pod
    # looks for cameras to take or hand over in between (and how soon a dead pod's cameras are noticed).
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.5
    # RTSP socket timeout: a connect or read that waits this long fails; while streaming that is a stall (offline,
    # reconnect).
    stall_s: Seconds = 5.0
    # Reconnect back-off: initial * 2^failures up to max, with jitter; reset after stable_s online.
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    stable_s: Seconds = 10.0
    # Health while online (fps, bitrate, last keyframe, clock offset) every this long, and at every change.
    status_interval_s: Seconds = 5.0
    # Units waiting between the demux thread and the bus; past that the thread drops them (a hole in seq).
    queue_packets: Annotated[int, msgspec.Meta(ge=8, le=100_000)] = 250
    # Packets from all cameras reach the event loop in batches gathered over this long (fewer wake-ups and socket
    # writes; 0: each packet at once).
    coalesce_ms: Annotated[float, msgspec.Meta(ge=0, le=100)] = 4.0
    # Packets are stored for recording in batches (one JetStream message each) that end right after a keyframe,
    # or when their first packet is batch_max_ms old, or at batch_max_bytes (under the server's max_payload).
    batch_max_ms: Annotated[float, msgspec.Meta(ge=0, le=10_000)] = 1000.0
    batch_max_bytes: Annotated[int, msgspec.Meta(ge=1, le=8 * 1024 * 1024)] = 4 * 1024 * 1024
    # Batches in flight per stream (not yet acknowledged by JetStream), and how long an ack may take.
    publish_window: Annotated[int, msgspec.Meta(ge=1, le=4000)] = 16
    ack_timeout_s: Seconds = 5.0
    flush_timeout_s: Seconds = 5.0
    # A camera clock (RTCP) further from ours than this is not trusted; capture times then come from ours.
    clock_tolerance_ms: Annotated[float, msgspec.Meta(gt=0)] = 1000.0
    # At the start of a session, packets wait at most this long for the camera's first RTCP sender report.
    clock_settle_s: Annotated[float, msgspec.Meta(ge=0, le=30)] = 1.0

    def pull_settings(self) -> PullSettings:
        return PullSettings(
            stall_s=self.stall_s,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            stable_s=self.stable_s,
            status_interval_s=self.status_interval_s,
            queue_packets=self.queue_packets,
            coalesce_s=self.coalesce_ms / 1000,
            publish_window=self.publish_window,
            batch_max_s=self.batch_max_ms / 1000,
            batch_max_bytes=self.batch_max_bytes,
            ack_timeout_s=self.ack_timeout_s,
            flush_timeout_s=self.flush_timeout_s,
            session=SessionPolicy(
                clock=ClockPolicy(tolerance_ns=int(self.clock_tolerance_ms * 1e6)),
                settle_min_ns=min(int(self.clock_settle_s * NS), 300_000_000),
                settle_max_ns=int(self.clock_settle_s * NS),
            ),
        )


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
