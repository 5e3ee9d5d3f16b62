"""Every NATS subject Argus uses, each bound to the one message type it carries.

A service never spells a subject string: it formats one of these (`MEDIA.format(camera="c1", stream="main")`), so
publishing the wrong message type on a subject is a type error, and a token that would change the subject's shape
(a dot, a wildcard, white space) is refused before anything is sent.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import msgspec

from argus_core.bus import messages as m

M = TypeVar("M", bound=msgspec.Struct)
Encoding = Literal["json", "msgpack"]

ROOT = "argus"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class SubjectError(ValueError):
    """A subject token is missing or not a plain token."""


@dataclass(frozen=True)
class Subject(Generic[M]):
    """A subject template such as `argus.media.{camera}.{stream}` and the message type it carries."""

    template: str
    type: type[M]
    encoding: Encoding = "json"
    description: str = ""
    tokens: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(name for _, name, _, _ in string.Formatter().parse(self.template) if name)
        object.__setattr__(self, "tokens", names)

    def format(self, **tokens: str) -> str:
        """The concrete subject; every token must be given and be a plain token."""
        missing = set(self.tokens) - tokens.keys()
        extra = tokens.keys() - set(self.tokens)
        if missing or extra:
            raise SubjectError(f"{self.template}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, value in tokens.items():
            if not _TOKEN_RE.match(value):
                raise SubjectError(f"{self.template}: {name}={value!r} is not a plain subject token")
        return self.template.format(**tokens)

    def wildcard(self, **tokens: str) -> str:
        """A subscription filter: the tokens given are fixed, the others match any single token."""
        filled = {name: "*" for name in self.tokens}
        for name, value in tokens.items():
            if name not in filled:
                raise SubjectError(f"{self.template}: unexpected token {name}")
            if not _TOKEN_RE.match(value):
                raise SubjectError(f"{self.template}: {name}={value!r} is not a plain subject token")
            filled[name] = value
        return self.template.format(**filled)

    def parse(self, subject: str) -> dict[str, str]:
        """The tokens of a concrete subject of this template (for wildcard subscribers)."""
        parts = subject.split(".")
        pattern = self.template.split(".")
        if len(parts) != len(pattern):
            raise SubjectError(f"{subject!r} does not match {self.template}")
        out: dict[str, str] = {}
        for part, pat in zip(parts, pattern, strict=True):
            if pat.startswith("{") and pat.endswith("}"):
                out[pat[1:-1]] = part
            elif pat != part:
                raise SubjectError(f"{subject!r} does not match {self.template}")
        return out


MEDIA = Subject(
    f"{ROOT}.media.{{camera}}.{{stream}}",
    m.MediaPacket,
    "msgpack",
    "live access units of one camera stream, one per message, core NATS only: published by the ingest pod that "
    "pulls the camera while a live view pod's LiveDemand holds",
)
RECORD = Subject(
    f"{ROOT}.record.{{camera}}.{{stream}}",
    m.MediaBatch,
    "msgpack",
    "every access unit of one camera stream in batches (a GOP's tail up to its next keyframe, at most a second), "
    "published by ingest into the MEDIA stream for the recorders",
)
LIVE_DEMAND = Subject(
    f"{ROOT}.live.demand.{{camera}}.{{stream}}",
    m.LiveDemand,
    "json",
    "live view asks ingest to publish a camera stream on its MEDIA subject; with catchup, a request",
)
LIVE_CATCHUP = Subject(
    f"{ROOT}.live.catchup.{{camera}}.{{stream}}",
    m.LiveCatchup,
    "msgpack",
    "ingest's reply to a LiveDemand with catchup (the request's inbox): the current GOP so far",
)
CAMERA_STATUS = Subject(
    f"{ROOT}.camera.status.{{camera}}", m.CameraStatus, "json", "camera health from ingest (also in KV)"
)
CAMERA_CHANGED = Subject(
    f"{ROOT}.camera.changed.{{camera}}", m.CameraChanged, "json", "camera registry changes, from the api"
)
SEGMENT_RECORDED = Subject(
    f"{ROOT}.recording.segment.{{camera}}", m.SegmentRecorded, "json", "a segment is stored and indexed"
)
RECORDING_GAP = Subject(f"{ROOT}.recording.gap.{{camera}}", m.RecordingGap, "json", "a recording gap and its cause")
PTZ_COMMAND = Subject(f"{ROOT}.ptz.command.{{camera}}", m.PtzCommand, "json", "PTZ request; the reply is a PtzResult")
PTZ_RESULT = Subject(f"{ROOT}.ptz.result.{{camera}}", m.PtzResult, "json", "PTZ reply (the request's inbox)")
AUDIT = Subject(f"{ROOT}.audit.{{service}}", m.AuditEvent, "json", "audit events from every service, stored by audit")
SERVICE_EVENT = Subject(
    f"{ROOT}.event.{{service}}.{{kind}}",
    m.ServiceEvent,
    "json",
    "operational events (spool full, outage, ...)",
)

ALL_SUBJECTS: tuple[Subject[Any], ...] = (
    MEDIA,
    RECORD,
    LIVE_DEMAND,
    LIVE_CATCHUP,
    CAMERA_STATUS,
    CAMERA_CHANGED,
    SEGMENT_RECORDED,
    RECORDING_GAP,
    PTZ_COMMAND,
    PTZ_RESULT,
    AUDIT,
    SERVICE_EVENT,
)
