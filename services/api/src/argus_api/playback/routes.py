"""Playback over HTTP: timeline, HLS, seek, clip; access checks, audit events and clear errors.

    GET /api/v1/cameras/{camera}/playback/timeline  ?from= &until= [&stream=main]
    GET /api/v1/cameras/{camera}/playback/hls.m3u8  ?from= &until= [&at=] [&delivery=proxy|presigned] [&stream=]
    GET /api/v1/cameras/{camera}/playback/seek      ?at= [&window=3600] [&stream=]
    GET /api/v1/cameras/{camera}/playback/clip.mp4  ?from= &until= [&stream=]
    GET /api/v1/playback/clips/{id}                 the record of a clip: its SHA-256, size, first keyframe
    GET /api/v1/playback/s/{object key}             a proxied segment (signed URL from a playlist; Range works)
    GET /playback/                                  the player page (hls.js), public; `/playback/hls.min.js`

Times are ISO 8601 with a zone or epoch seconds. Each request on a camera needs the token's `playback` grant on
that camera for the footage time asked for, and is an audit event (`playback.timeline`, `playback.playlist`,
`playback.seek`, `playback.clip`, then `playback.clip.complete` with the clip's digest); an access that cannot
be audited is refused (503), and a refused one is audited as denied. Errors are problem+json with a `type` of
`urn:argus:playback:<what>`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry

from argus_api.playback import clip as clipmod
from argus_api.playback import fmp4, hls
from argus_api.playback.clips import clip, clip_record
from argus_api.playback.common import (
    PLAYBACK_KEY,
    Metrics,
    Playback,
    abort_connection,
    access,
    audit,
    camera_of,
    guard,
    missing_problem,
    no_footage,
    problem_type,
    range_of,
    required_time,
    state_of,
    storage_problem,
    stream_of,
    time_ms,
    visible,
)
from argus_api.playback.config import PlaybackConfig
from argus_api.playback.delivery import (
    Faults,
    Presigner,
    SegmentMissing,
    SegmentSource,
    StorageFailed,
    Unsatisfiable,
    parse_range,
)
from argus_api.playback.index import iso
from argus_api.playback.timeline import build_timeline
from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus
from argus_core.http import Problem, public_route
from argus_core.runtime import RUNTIME_KEY, Stage
from argus_core.storage import ObjectStore

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
RENDER_ON_LOOP = 1000  # playlist entries written on the event loop; longer playlists go to the executor


def setup(
    app: web.Application,
    *,
    store: ObjectStore,
    config: PlaybackConfig | None = None,
    emitter: AuditEmitter | None = None,
    bus: Bus | None = None,
    registry: CollectorRegistry | None = None,
    pod: str = "",
    service: str = "api",
) -> None:
    """Give the playback routes what they use besides the pool (`cameras.POOL_KEY`): the object store, settings,
    the audit emitter, the bus (fault events), the metrics registry (the runtime's if not given)."""
    config = config or PlaybackConfig()
    runtime = app.get(RUNTIME_KEY)
    if registry is None:
        registry = runtime.registry if runtime is not None else CollectorRegistry()
    if not pod and runtime is not None:
        pod = runtime.config.pod_name
    if config.url_key:
        key = config.url_key.encode()
    else:
        key = secrets.token_bytes(32)
        log.info("playback: proxied segment URLs are signed with a key of this process (set ARGUS_PLAYBACK_URL_KEY)")
    presigner = None
    if config.delivery == "presigned":
        presigner = Presigner(
            store.config,
            endpoint=config.presign_endpoint,
            secure=config.presign_secure if config.presign_endpoint else None,
        )
    state = Playback(
        config=config,
        source=SegmentSource(store, init_cache=config.init_cache),
        signer=hls.UrlSigner(key, ttl_s=config.url_ttl_s),
        presigner=presigner,
        emitter=emitter,
        faults=Faults(service=service, pod=pod, bus=bus, registry=registry),
        metrics=Metrics(registry),
        executor=ThreadPoolExecutor(max_workers=config.clip_workers + 1, thread_name_prefix="playback"),
        clip_slots=asyncio.Semaphore(config.clip_workers),
        page=_static("playback.html"),
        hls_js=_static("vendor/hls.min.js"),
    )
    app[PLAYBACK_KEY] = state

    async def close() -> None:
        state.executor.shutdown(wait=True)  # requests are over by now: nothing is running in it
        if state.presigner is not None:
            state.presigner.close()

    async def on_cleanup(_: web.Application) -> None:
        await close()

    if runtime is not None:
        # The runtime's HTTP server is already serving (the app is frozen): close with its CLOSE stage.
        runtime.on_stop(Stage.CLOSE, "playback", close)
    else:
        app.on_cleanup.append(on_cleanup)


def routes(app: web.Application) -> None:
    base = "/api/v1/cameras/{camera}/playback"
    app.router.add_get(f"{base}/timeline", timeline)
    app.router.add_get(f"{base}/hls.m3u8", playlist)
    app.router.add_get(f"{base}/seek", seek)
    app.router.add_get(f"{base}/clip.mp4", clip)
    app.router.add_get("/api/v1/playback/clips/{clip_id}", clip_record)
    app.router.add_get(hls.SEGMENT_PATH + "{key:.+}", segment)
    app.router.add_get("/playback/", player_page)
    app.router.add_get("/playback/hls.min.js", player_script)


# --- timeline ------------------------------------------------------------------------------------------------------


async def timeline(request: web.Request) -> web.Response:
    started = time.perf_counter()
    state = state_of(request)
    camera, stream = camera_of(request), stream_of(request)
    start, end = range_of(request, state.config.timeline_max_s, "timeline")
    identity, index = await access(request, "playback.timeline", camera, (start, end), stream)
    await audit(request, identity, "playback.timeline", camera, (start, end), details={"stream": stream})
    spans = await guard(index.spans(camera, stream, start, end, state.config.join_tolerance_ms))
    gaps = await guard(index.gaps(camera, stream, start, end))
    body = build_timeline(camera, stream, start, end, spans, gaps)
    state.metrics.requests.labels("timeline", "success").inc()
    state.metrics.seconds.labels("timeline").observe(time.perf_counter() - started)
    response = web.Response(body=msgspec.json.encode(body), content_type="application/json")
    response.enable_compression()
    return response


# --- HLS -----------------------------------------------------------------------------------------------------------


def _delivery(request: web.Request, state: Playback) -> str:
    wanted = request.query.get("delivery", state.config.delivery)
    if wanted == "proxy":
        return "proxy"
    if wanted == "presigned":
        if state.presigner is None:
            raise Problem(
                400,
                "Bad Request",
                "presigned delivery is not enabled in this deployment (ARGUS_PLAYBACK_DELIVERY)",
                type_=problem_type("bad-delivery"),
                parameter="delivery",
            )
        return "presigned"
    raise Problem(
        400, "Bad Request", "delivery: proxy or presigned", type_=problem_type("bad-delivery"), parameter="delivery"
    )


async def _render_playlist(
    state: Playback, entries: list[hls.Entry], delivery: str, start_offset_ms: int | None
) -> str:
    if delivery == "presigned":
        assert state.presigner is not None
        keys = [e.segment.object_key for e in entries]
        inits = sorted({e.segment.init_key for e in entries if e.new_init})
        wanted = [*keys, *inits]
        if len(wanted) > RENDER_ON_LOOP:  # about 2.5 us a URL: a day's playlist goes to the executor
            signed = await clipmod.blocking(state.executor, state.presigner.sign, wanted, state.config.url_ttl_s)
        else:
            signed = state.presigner.sign(wanted, state.config.url_ttl_s)
        media = dict(zip(keys, signed[: len(keys)], strict=True))
        init_urls = dict(zip(inits, signed[len(keys) :], strict=True))
        return hls.render(
            entries,
            media_uri=lambda e: media[e.segment.object_key],
            init_uri=lambda e: init_urls[e.segment.init_key],
            start_offset_ms=start_offset_ms,
        )
    expires = state.signer.expiry()
    render = functools.partial(
        hls.render,
        entries,
        media_uri=lambda e: state.signer.url(
            hls.SegmentGrant(
                key=e.segment.object_key,
                init_key=e.segment.init_key,
                offset_ms=e.position_ms,
                expires=expires,
                size=e.segment.bytes,
            )
        ),
        init_uri=lambda e: state.signer.url(
            hls.SegmentGrant(key=e.segment.init_key, init_key="", offset_ms=0, expires=expires, size=0)
        ),
        start_offset_ms=start_offset_ms,
    )
    if len(entries) > RENDER_ON_LOOP:  # a day is 14,400 signed URLs: about 50 ms of work
        return await clipmod.blocking(state.executor, render)
    return render()


async def playlist(request: web.Request) -> web.Response:
    started = time.perf_counter()
    state = state_of(request)
    camera, stream = camera_of(request), stream_of(request)
    start, end = range_of(request, state.config.playlist_max_s, "playlist")
    at = time_ms("at", request.query["at"]) if request.query.get("at") else None
    delivery = _delivery(request, state)
    identity, index = await access(request, "playback.playlist", camera, (start, end), stream)
    await audit(
        request,
        identity,
        "playback.playlist",
        camera,
        (start, end),
        details={"stream": stream, "delivery": delivery},
    )
    segments = visible(identity, camera, await guard(index.segments(camera, stream, start, end)))
    if not segments:
        raise no_footage(camera, start, end)
    entries = hls.plan(
        segments, tolerance_ms=state.config.join_tolerance_ms, restart_every_segment=delivery == "presigned"
    )
    offset = hls.position_of(entries, at) if at is not None else None
    text = await _render_playlist(state, entries, delivery, offset)
    state.metrics.requests.labels("playlist", "success").inc()
    state.metrics.seconds.labels("playlist").observe(time.perf_counter() - started)
    response = web.Response(text=text, content_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-store"})
    response.enable_compression()
    return response


# --- seek ----------------------------------------------------------------------------------------------------------


async def seek(request: web.Request) -> web.Response:
    started = time.perf_counter()
    state = state_of(request)
    camera, stream = camera_of(request), stream_of(request)
    at = required_time(request, "at")
    window_text = request.query.get("window", "3600")
    try:
        window_s = float(window_text)
    except ValueError:
        window_s = -1.0
    if not 0 < window_s <= state.config.playlist_max_s:
        raise Problem(
            400,
            "Bad Request",
            f"window: seconds of playback after the instant, up to {state.config.playlist_max_s:.0f}",
            type_=problem_type("bad-window"),
            parameter="window",
        )
    end = at + round(window_s * 1000)
    identity, index = await access(request, "playback.seek", camera, (at, end), stream)
    await audit(request, identity, "playback.seek", camera, (at, end), details={"stream": stream})
    found = await guard(index.segment_at(camera, stream, at))
    in_gap = found is None
    if found is None:
        found = await guard(index.segment_after(camera, stream, at, end - at))
    if found is None:
        raise no_footage(camera, at, end, " (nothing at the instant nor after it in the window)")
    play_from = found.start_ms
    position = max(0, at - found.start_ms) if not in_gap else 0
    query = {
        "from": iso(play_from),
        "until": iso(max(end, found.end_ms)),
        "at": iso(max(at, found.start_ms)),
        "stream": stream,
    }
    body = {
        "camera": camera,
        "stream": stream,
        "at": iso(at),
        "in_gap": in_gap,
        "segment": {
            "start": iso(found.start_ms),
            "end": iso(found.end_ms),
            "duration_ms": found.duration_ms,
            "codec": found.codec,
            "width": found.width,
            "height": found.height,
        },
        "offset_s": position / 1000,
        "plays_from": iso(found.start_ms + position),
        "playlist": f"/api/v1/cameras/{quote(camera)}/playback/hls.m3u8?{urlencode(query)}",
    }
    state.metrics.requests.labels("seek", "success").inc()
    state.metrics.seconds.labels("seek").observe(time.perf_counter() - started)
    return web.json_response(body)


# --- proxied segments ----------------------------------------------------------------------------------------------


@public_route
async def segment(request: web.Request) -> web.StreamResponse:
    """A segment or init segment from a playlist's signed URL, with its tfdt moved to its playlist position."""
    state = state_of(request)
    key = request.match_info["key"]
    try:
        grant = state.signer.verify(key, dict(request.query))
    except hls.BadSignature as exc:
        raise Problem(403, "Forbidden", str(exc), type_=problem_type("bad-segment-url")) from exc
    camera = key.split("/", 1)[0]
    source = state.source
    try:
        if not grant.init_key:  # an init segment: small, immutable, cached
            init = await source.init(key)
            return _bytes_response(request, init.data, "video/mp4", state)
        init = await source.init(grant.init_key)
    except SegmentMissing as exc:
        raise await missing_problem(request, camera, exc, None) from exc
    except StorageFailed as exc:
        raise storage_problem(exc) from exc
    size = grant.size
    try:
        wanted = parse_range(request.headers.get("Range"), size)
    except Unsatisfiable:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = (wanted.start, wanted.end) if wanted is not None else (0, size)
    # The tfdt boxes are found by walking the boxes from the first byte: read from 0, send from `start`.
    patcher = fmp4.TfdtPatcher(grant.offset_ms * init.timescale // 1000)
    chunks = source.chunks(key, 0, end)
    try:
        try:
            first = await anext(chunks)  # a missing object is found before the answer starts
        except SegmentMissing as exc:
            raise await missing_problem(request, camera, exc, None) from exc
        except StorageFailed as exc:
            raise storage_problem(exc) from exc
        response = web.StreamResponse(
            status=206 if wanted is not None else 200,
            headers={"Content-Type": "video/iso.segment", "Accept-Ranges": "bytes", "Cache-Control": "private"},
        )
        if wanted is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        response.content_length = end - start
        await response.prepare(request)
        pos = 0
        try:
            chunk: bytes | None = first
            while chunk is not None:
                out = patcher.feed(chunk)
                lo, hi = max(start, pos), min(end, pos + len(out))
                if hi > lo:
                    await response.write(out[lo - pos : hi - pos])
                    state.metrics.proxied_bytes.inc(hi - lo)
                pos += len(out)
                chunk = await anext(chunks, None)
            if end == size:
                patcher.finish()
        except (SegmentMissing, StorageFailed, fmp4.BoxError) as exc:
            if isinstance(exc, SegmentMissing):
                await state.faults.segment_missing(camera, exc.key, None)
            log.error("playback: segment %s failed mid-answer: %s", key, exc)  # noqa: TRY400 - the cause is the news
            abort_connection(request)
            return response
        except ConnectionResetError:
            return response
        await response.write_eof()
        return response
    finally:
        await chunks.aclose()


def _bytes_response(request: web.Request, data: bytes, content_type: str, state: Playback) -> web.Response:
    wanted = parse_range(request.headers.get("Range"), len(data))
    headers = {"Content-Type": content_type, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=86400"}
    if wanted is None:
        state.metrics.proxied_bytes.inc(len(data))
        return web.Response(body=data, headers=headers)
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end - 1}/{len(data)}"
    state.metrics.proxied_bytes.inc(wanted.length)
    return web.Response(status=206, body=data[wanted.start : wanted.end], headers=headers)


# --- the player page -----------------------------------------------------------------------------------------------


def _static(name: str) -> bytes | None:
    path = resources.files("argus_api").joinpath(f"static/{name}")
    return path.read_bytes() if path.is_file() else None


@public_route
async def player_page(request: web.Request) -> web.Response:
    page = state_of(request).page
    if page is None:
        raise Problem(404, "Not Found", "the player page is not installed", type_=problem_type("no-player"))
    return web.Response(body=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


@public_route
async def player_script(request: web.Request) -> web.Response:
    script = state_of(request).hls_js
    if script is None:
        raise Problem(
            404,
            "Not Found",
            "hls.js is not installed: run services/api/web/vendor-hlsjs.sh (./dev setup does)",
            type_=problem_type("no-player"),
        )
    return web.Response(body=script, content_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})
