"""What every playback route shares: its state, request parsing, access checks, audit events and problems."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from argus_api.cameras import POOL_KEY
from argus_api.playback import hls
from argus_api.playback.config import PlaybackConfig
from argus_api.playback.delivery import (
    Faults,
    Presigner,
    SegmentMissing,
    SegmentSource,
    StorageFailed,
)
from argus_api.playback.index import IndexUnavailable, PlaybackIndex, Segment, iso
from argus_core.audit.emitter import AuditEmitter, AuditUnavailable
from argus_core.bus.messages import Outcome
from argus_core.http import Problem, identity_of
from argus_core.identity import Identity

log = logging.getLogger(__name__)

T = TypeVar("T")

_CAMERA_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STREAMS = ("main", "sub")
_OFFSET_RE = re.compile(r" (\d\d:?\d\d)$")


def problem_type(what: str) -> str:
    return f"urn:argus:playback:{what}"


# --- state ---------------------------------------------------------------------------------------------------------


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "argus_playback_requests", "Playback requests by kind and outcome", ["kind", "outcome"], registry=registry
        )
        self.seconds = Histogram(
            "argus_playback_answer_seconds",
            "Time to answer a timeline, playlist or seek (clips: time to the first byte)",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.clip_bytes = Counter("argus_playback_clip_bytes", "Bytes of clips sent", registry=registry)
        self.proxied_bytes = Counter(
            "argus_playback_proxied_bytes", "Bytes of segments streamed through the api", registry=registry
        )


@dataclass
class Playback:
    config: PlaybackConfig
    source: SegmentSource
    signer: hls.UrlSigner
    presigner: Presigner | None
    emitter: AuditEmitter | None
    faults: Faults
    metrics: Metrics
    executor: ThreadPoolExecutor
    clip_slots: asyncio.Semaphore
    page: bytes | None = None
    hls_js: bytes | None = None
    clips_waiting: int = 0


PLAYBACK_KEY = web.AppKey("argus.api.playback", Playback)


def state_of(request: web.Request) -> Playback:
    state = request.app.get(PLAYBACK_KEY)
    if state is None:
        raise Problem(503, "Service Unavailable", "playback is not set up in this api")
    return state


def index_of(request: web.Request) -> PlaybackIndex:
    return PlaybackIndex(request.app[POOL_KEY])


# --- request parsing -----------------------------------------------------------------------------------------------


def time_ms(name: str, text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or not 0 <= value < 2**40:
            raise Problem(400, "Bad Request", f"{name}: out of range", type_=problem_type("bad-time"), parameter=name)
        return round(value * 1000)
    # An unencoded "+01:00" in a query string arrives as " 01:00": put the sign back.
    text = _OFFSET_RE.sub(r"+\1", text)
    try:
        when = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise Problem(
            400,
            "Bad Request",
            f"{name}: not an ISO 8601 time or epoch seconds",
            type_=problem_type("bad-time"),
            parameter=name,
        ) from exc
    if when.tzinfo is None:
        raise Problem(
            400, "Bad Request", f"{name}: give a time zone (Z for UTC)", type_=problem_type("bad-time"), parameter=name
        )
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def required_time(request: web.Request, name: str) -> int:
    text = request.query.get(name)
    if not text:
        raise Problem(400, "Bad Request", f"{name}: required", type_=problem_type("bad-time"), parameter=name)
    return time_ms(name, text)


def camera_of(request: web.Request) -> str:
    camera = request.match_info["camera"]
    if not _CAMERA_RE.fullmatch(camera):
        raise Problem(
            404, "Not Found", f"{camera!r} is not a camera id", type_=problem_type("unknown-camera"), camera=camera
        )
    return camera


def stream_of(request: web.Request) -> str:
    stream = request.query.get("stream", "main")
    if stream not in _STREAMS:
        raise Problem(400, "Bad Request", "stream: main or sub", type_=problem_type("bad-stream"), parameter="stream")
    return stream


def range_of(request: web.Request, limit_s: float, kind: str) -> tuple[int, int]:
    start = required_time(request, "from")
    end = required_time(request, "until")
    if end <= start:
        raise Problem(
            400,
            "Bad Request",
            f"the range is empty or inverted: until ({iso(end)}) must be after from ({iso(start)})",
            type_=problem_type("inverted-range"),
            **{"from": iso(start), "until": iso(end)},
        )
    if end - start > limit_s * 1000:
        raise Problem(
            400,
            "Bad Request",
            f"a {kind} covers at most {limit_s:.0f} s; this range is {(end - start) / 1000:.0f} s",
            type_=problem_type("range-too-long"),
            max_s=limit_s,
        )
    return start, end


def client_of(request: web.Request) -> str:
    agent = request.headers.get("User-Agent", "")
    return f"{request.remote or ''} {agent}".strip()[:256]


def ns(ms: int) -> int:
    return ms * 1_000_000


# --- access and audit ----------------------------------------------------------------------------------------------


async def audit(
    request: web.Request,
    identity: Identity,
    action: str,
    camera: str,
    footage: tuple[int, int],
    *,
    outcome: Outcome = "success",
    target: str = "",
    details: dict[str, str] | None = None,
) -> None:
    emitter = state_of(request).emitter
    if emitter is None:
        return
    try:
        await emitter.emit(
            action,
            actor=identity,
            outcome=outcome,
            client=client_of(request),
            camera=camera,
            target=target,
            footage=(ns(footage[0]), ns(footage[1])),
            details=details,
        )
    except AuditUnavailable as exc:
        raise Problem(
            503,
            "Service Unavailable",
            "this access to footage cannot be audited now, so it is refused",
            type_=problem_type("audit-unavailable"),
        ) from exc


async def access(
    request: web.Request, action: str, camera: str, footage: tuple[int, int], stream: str
) -> tuple[Identity, PlaybackIndex]:
    """The caller, if their token grants playback of `camera` over `footage` and the camera is known; else 403/404.
    A refusal is audited as denied."""
    identity = identity_of(request)
    state = state_of(request)
    if not identity.allows("playback", camera, (footage[0] / 1000, footage[1] / 1000)):
        state.metrics.requests.labels(action.removeprefix("playback."), "denied").inc()
        await audit(request, identity, action, camera, footage, outcome="denied", details={"stream": stream})
        raise Problem(
            403,
            "Forbidden",
            f"no grant for playback of camera {camera} from {iso(footage[0])} to {iso(footage[1])}",
            type_=problem_type("forbidden"),
            action="playback",
            camera=camera,
        )
    index = index_of(request)
    if not await guard(index.camera_known(camera)):
        raise Problem(404, "Not Found", f"unknown camera {camera}", type_=problem_type("unknown-camera"), camera=camera)
    return identity, index


async def guard(awaitable: Awaitable[T]) -> T:
    """Await an index read; a database that does not answer is a 503 problem."""
    try:
        return await awaitable
    except IndexUnavailable as exc:
        log.warning("playback: recording index unavailable: %s", exc)
        raise Problem(
            503, "Service Unavailable", "the recording index is not answering", type_=problem_type("index-unavailable")
        ) from exc


def no_footage(camera: str, start: int, end: int, what: str = "") -> Problem:
    return Problem(
        404,
        "Not Found",
        f"no recorded footage of {camera} from {iso(start)} to {iso(end)}{what}",
        type_=problem_type("no-footage"),
        camera=camera,
        **{"from": iso(start), "until": iso(end)},
    )


def visible(identity: Identity, camera: str, segments: Sequence[Segment]) -> list[Segment]:
    """The segments wholly inside the footage the caller may see (a partner's window cuts the ends off)."""
    return [s for s in segments if identity.allows("playback", camera, (s.start_ms / 1000, s.end_ms / 1000))]


async def missing_problem(request: web.Request, camera: str, exc: SegmentMissing, start_ms: int | None) -> Problem:
    await state_of(request).faults.segment_missing(camera, exc.key, start_ms)
    return Problem(
        500,
        "Footage Missing From Storage",
        f"recorded footage of {camera} is in the index but missing from the object store: {exc.key}"
        + (f" (from {iso(start_ms)})" if start_ms is not None else ""),
        type_=problem_type("segment-missing"),
        camera=camera,
        object_key=exc.key,
        fault=True,
    )


def storage_problem(exc: StorageFailed) -> Problem:
    return Problem(
        503, "Service Unavailable", f"the object store failed: {exc}", type_=problem_type("storage-unavailable")
    )


def abort_connection(request: web.Request) -> None:
    """Cut the connection of an answer already started, so the client sees it incomplete (not a short success)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
