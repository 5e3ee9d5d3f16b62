"""Clips over HTTP: cut, stream with chunked transfer, record the digest; and the record's own route."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from argus_api.playback import clip as clipmod
from argus_api.playback.common import (
    Playback,
    abort_connection,
    access,
    audit,
    camera_of,
    client_of,
    guard,
    index_of,
    missing_problem,
    no_footage,
    ns,
    problem_type,
    range_of,
    state_of,
    storage_problem,
    stream_of,
)
from argus_api.playback.delivery import (
    SegmentMissing,
    StorageFailed,
)
from argus_api.playback.index import IndexUnavailable, PlaybackIndex, Segment, at_ms, iso
from argus_core.audit.emitter import AuditUnavailable
from argus_core.http import Problem, identity_of
from argus_core.identity import Identity

log = logging.getLogger(__name__)


# --- clips ---------------------------------------------------------------------------------------------------------


async def _check_stored(request: web.Request, camera: str, segments: Sequence[Segment]) -> None:
    """Every object of the clip is in the store, before the answer starts (a missing one is a fault, and a clear
    error now rather than a cut-off download later)."""
    source = state_of(request).source
    try:
        inits = sorted({s.init_key for s in segments})
        for key in inits:
            await source.init(key)
        missing = set(await source.missing([s.object_key for s in segments]))
    except SegmentMissing as exc:
        raise await missing_problem(request, camera, exc, segments[0].start_ms) from exc
    except StorageFailed as exc:
        raise storage_problem(exc) from exc
    if missing:
        lost = min((s for s in segments if s.object_key in missing), key=lambda s: s.start_ms)
        raise await missing_problem(request, camera, SegmentMissing(lost.object_key), lost.start_ms)


@dataclass(frozen=True)
class _ClipRequest:
    """One clip being cut: who asked for what."""

    request: web.Request
    state: Playback
    index: PlaybackIndex
    identity: Identity
    id: str
    camera: str
    stream: str
    start: int
    end: int


async def clip(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    state = state_of(request)
    camera, stream = camera_of(request), stream_of(request)
    start, end = range_of(request, state.config.clip_max_s, "clip")
    identity, index = await access(request, "playback.clip", camera, (start, end), stream)
    clip_id = uuid.uuid4().hex
    await audit(request, identity, "playback.clip", camera, (start, end), target=clip_id, details={"stream": stream})
    segments = await guard(index.segments(camera, stream, start, end))
    if not segments:
        raise no_footage(camera, start, end)
    try:
        clipmod.check_one_configuration(segments)
    except clipmod.CodecChange as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            f"{exc}: cut one clip before it and one after",
            type_=problem_type("codec-change"),
            at=iso(exc.at_ms),
        ) from exc
    if state.clips_waiting >= state.config.clip_workers + state.config.clip_queue:
        raise Problem(
            503, "Service Unavailable", "too many clips are being cut: try again shortly", type_=problem_type("busy")
        )
    state.clips_waiting += 1
    try:
        async with state.clip_slots:
            await _check_stored(request, camera, segments)
            job = _ClipRequest(request, state, index, identity, clip_id, camera, stream, start, end)
            return await _send_clip(job, segments, started)
    finally:
        state.clips_waiting -= 1


async def _send_clip(c: _ClipRequest, segments: list[Segment], started: float) -> web.StreamResponse:
    state, request = c.state, c.request
    await guard(c.index.clip_started(c.id, c.camera, c.stream, c.start, c.end, c.identity.subject, c.identity.org))
    # A caller whose grant starts at `from` (a partner's window) gets the first keyframe at or after it instead.
    allowed = c.identity.allows("playback", c.camera, (segments[0].start_ms / 1000, c.end / 1000))
    job = clipmod.ClipJob(
        state.source,
        segments,
        from_ms=c.start,
        until_ms=c.end,
        not_before_ms=None if allowed else c.start,
        title=f"{c.camera} {iso(c.start)} - {iso(c.end)}",
        executor=state.executor,
    )
    stamp = at_ms(c.start).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Type": "video/mp4",
            "Content-Disposition": f'attachment; filename="{c.camera}-{stamp}.mp4"',
            "Cache-Control": "no-store",
            "X-Argus-Clip-Id": c.id,
            "Link": f'</api/v1/playback/clips/{c.id}>; rel="describedby"',
        }
    )
    response.enable_chunked_encoding()
    first_byte = True

    async def write(data: bytes) -> None:
        nonlocal first_byte
        if first_byte:
            await response.prepare(request)
            state.metrics.seconds.labels("clip").observe(time.perf_counter() - started)
            first_byte = False
        await response.write(data)
        state.metrics.clip_bytes.inc(len(data))

    status, detail = "failed", ""
    result: clipmod.ClipResult | None = None
    try:
        result = await job.run(write)
        status = "complete"
    except ConnectionResetError:
        status, detail = "aborted", "the client went away"
    except clipmod.NothingToClip as exc:
        detail = str(exc)
        if first_byte:
            raise no_footage(c.camera, c.start, c.end, " that the caller may see from a keyframe") from exc
    except SegmentMissing as exc:
        detail = str(exc)
        if first_byte:
            raise await missing_problem(request, c.camera, exc, None) from exc
        await state.faults.segment_missing(c.camera, exc.key, None)
    except (StorageFailed, clipmod.ClipError) as exc:
        detail = str(exc)
        if first_byte:
            problem = Problem(
                500, "Internal Server Error", f"the clip could not be cut: {exc}", type_=problem_type("clip-failed")
            )
            raise problem from exc
    except Exception as exc:
        if first_byte:
            raise  # problem_middleware answers 500
        # The answer has started: the only way left to say it failed is to cut the connection (below).
        detail = f"{type(exc).__name__}: {exc}"
        log.exception("playback: clip %s of %s failed after its first bytes", c.id, c.camera)
    finally:
        state.metrics.requests.labels("clip", status).inc()
        # Recorded before the last chunk goes: a client that read the whole body finds the digest at once.
        await asyncio.shield(_finish_record(c, status, result, detail))
    if result is None:
        if status == "aborted":
            log.info("playback: clip %s of %s abandoned by the client", c.id, c.camera)
        else:
            log.error("playback: clip %s of %s failed: %s", c.id, c.camera, detail)
        abort_connection(request)
        return response
    await response.write_eof()
    return response


async def _finish_record(c: _ClipRequest, status: str, result: clipmod.ClipResult | None, detail: str) -> None:
    try:
        await c.index.clip_finished(
            c.id,
            status=status,
            start_ms=result.start_ms if result else None,
            end_ms=result.end_ms if result else None,
            size=result.size if result else 0,
            packets=result.packets if result else 0,
            segments=result.segments if result else 0,
            sha256=result.sha256 if result else None,
            detail=detail,
        )
    except IndexUnavailable as exc:
        log.error("playback: the record of clip %s was not completed: %s", c.id, exc)  # noqa: TRY400
    details = {"stream": c.stream, "status": status}
    if result is not None:
        details |= {
            "sha256": result.sha256.hex(),
            "bytes": str(result.size),
            "packets": str(result.packets),
            "starts_at": iso(result.start_ms),
        }
    if detail:
        details["detail"] = detail[:500]
    if c.state.emitter is not None:
        try:
            await c.state.emitter.emit(
                "playback.clip.complete",
                actor=c.identity,
                outcome="success" if status == "complete" else "failure",
                client=client_of(c.request),
                camera=c.camera,
                target=c.id,
                footage=(ns(c.start), ns(c.end)),
                details=details,
            )
        except AuditUnavailable as exc:
            log.error("playback: the completion of clip %s was not audited: %s", c.id, exc)  # noqa: TRY400


async def clip_record(request: web.Request) -> web.Response:
    clip_id = request.match_info["clip_id"]
    if not re.fullmatch(r"[0-9a-f]{32}", clip_id):
        raise Problem(404, "Not Found", "no such clip", type_=problem_type("unknown-clip"))
    record = await guard(index_of(request).clip(clip_id))
    identity = identity_of(request)
    footage = (record.requested_from_ms / 1000, record.requested_until_ms / 1000) if record else None
    if record is None or footage is None or not identity.allows("playback", record.camera, footage):
        raise Problem(404, "Not Found", "no such clip (or not one you may see)", type_=problem_type("unknown-clip"))
    return web.json_response(
        {
            "id": record.id,
            "camera": record.camera,
            "stream": record.stream,
            "requested": {"from": iso(record.requested_from_ms), "until": iso(record.requested_until_ms)},
            "start": iso(record.start_ms) if record.start_ms is not None else None,
            "end": iso(record.end_ms) if record.end_ms is not None else None,
            "status": record.status,
            "bytes": record.bytes,
            "packets": record.packets,
            "segments": record.segments,
            "sha256": record.sha256,
            "subject": record.subject,
            "detail": record.detail,
            "created": iso(record.created_ms),
            "finished": iso(record.finished_ms) if record.finished_ms is not None else None,
        }
    )
