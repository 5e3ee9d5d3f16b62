"""One valid message of every type the bus carries, for round-trip tests."""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgspec

from argus_core.bus import messages as m
from argus_core.bus.subjects import ALL_SUBJECTS, Subject

ACTOR = m.Actor(subject="op-7", roles=("operator",), client="10.0.0.7")

PACKET = m.MediaPacket(
    camera="cam-1",
    stream="main",
    session="s1",
    seq=41,
    pts=90000,
    dts=90000,
    duration=3600,
    keyframe=True,
    capture_ns=1_700_000_000_123_000_000,
    time_trusted=True,
    data=bytes(range(256)) * 4,
    config=m.CodecConfig(codec="h264", width=1280, height=720, extradata=b"\x01\x64\x00\x1f"),
)
NEXT = msgspec.structs.replace(
    PACKET, seq=42, pts=93600, dts=93600, keyframe=False, capture_ns=PACKET.capture_ns + 40_000_000, config=None
)

SAMPLES: dict[type[msgspec.Struct], msgspec.Struct] = {
    m.MediaPacket: PACKET,
    m.MediaBatch: m.MediaBatch(camera="cam-1", stream="main", session="s1", packets=(PACKET, NEXT)),
    m.LiveDemand: m.LiveDemand(camera="cam-1", stream="main", viewer="liveview-0", ttl_s=10.0, catchup=True),
    m.LiveCatchup: m.LiveCatchup(camera="cam-1", stream="main", pod="ingest-0", session="s1", packets=(PACKET, NEXT)),
    m.CameraStatus: m.CameraStatus(camera="cam-1", state="online", at_ns=1, fps=25.0, clock_offset_ms=-3.5),
    m.CameraChanged: m.CameraChanged(camera="cam-1", change="upsert", at_ns=2),
    m.SegmentRecorded: m.SegmentRecorded(
        camera="cam-1",
        stream="main",
        start_ns=1,
        end_ns=6_000_000_001,
        object_key="cam-1/2026/11/21/000000.000.mp4",
        bytes=1_500_000,
        sha256="ab" * 32,
        frames=150,
        keyframes=3,
        codec="h264",
        width=1280,
        height=720,
        time_trusted=True,
    ),
    m.RecordingGap: m.RecordingGap(camera="cam-1", stream="main", start_ns=1, end_ns=2, cause="camera_offline"),
    m.PtzCommand: m.PtzCommand(
        camera="cam-1", actor=ACTOR, action=m.PtzAbsoluteMove(pan=0.5, tilt=-0.25, zoom=0.1), priority=60
    ),
    m.PtzResult: m.PtzResult(camera="cam-1", ok=True, pan=0.5, presets={"1": "Town Hall"}),
    m.AuditEvent: m.AuditEvent(
        id="0b0e4c1e",
        at_ns=3,
        service="api",
        actor=ACTOR,
        action="playback.clip",
        outcome="success",
        camera="cam-1",
        footage_start_ns=1,
        footage_end_ns=2,
        reason="incident 123",
    ),
    m.ServiceEvent: m.ServiceEvent(
        service="recorder", pod="rec-0", kind="spool_full", level="critical", message="spool full", at_ns=4
    ),
}


M = TypeVar("M", bound=msgspec.Struct)


def sample(tp: type[M]) -> M:
    """The sample of one message type, typed as that type."""
    return cast(M, SAMPLES[tp])


def tokens_for(subject: Subject[Any]) -> dict[str, str]:
    values = {"camera": "cam-1", "stream": "main", "service": "api", "kind": "spool_full"}
    return {name: values[name] for name in subject.tokens}


def every_subject() -> list[tuple[Subject[Any], msgspec.Struct]]:
    return [(subject, SAMPLES[subject.type]) for subject in ALL_SUBJECTS]
