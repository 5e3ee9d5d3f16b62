"""Access, audit and bad input: clear problem+json for each, and footage missing from storage flagged as a fault."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from argus_api import cameras, playback
from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus
from argus_core.http import VERIFIER_KEY, auth_middleware, problem_middleware
from argus_core.storage import ObjectStore
from argus_recorder.index import Index
from tests.playback.media import Recording, demux, stock_rows, stock_segment, store_recording
from tests.playback.support import T0_MS, Api, audit_events, iso, service_events

CAM = "cam-err"
MIN = 60_000


@pytest.fixture
async def footage(index: Index, store: ObjectStore, pool: asyncpg.Pool) -> Recording:
    """Ten minutes of 6 s segments; the camera is in the register too."""
    stock = await asyncio.to_thread(stock_segment, "h264")
    rec = Recording(CAM, stock_rows(CAM, stock, T0_MS, 100))
    await store_recording(index, store, rec)
    await pool.execute(
        "INSERT INTO cameras (id, name, main_url) VALUES ($1, $1, 'rtsp://127.0.0.1/a'), "
        "('cam-empty', 'no footage', 'rtsp://127.0.0.1/b')",
        CAM,
    )
    return rec


def path(kind: str, camera: str = CAM) -> str:
    return f"/api/v1/cameras/{camera}/playback/{kind}"


def window(start: int, end: int) -> dict[str, str]:
    return {"from": iso(start), "until": iso(end)}


KINDS = ("timeline", "hls.m3u8", "clip.mp4")


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_camera_is_404(api: Api, footage: Recording, kind: str) -> None:
    reply = await api.get(path(kind, "cam-nobody"), api.token(), params=window(T0_MS, T0_MS + MIN))
    assert reply.status == 404
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.json()["type"] == "urn:argus:playback:unknown-camera"
    bad = await api.get(path(kind, "cam%20x"), api.token(), params=window(T0_MS, T0_MS + MIN))
    assert bad.status == 404


async def test_a_range_with_no_footage(api: Api, footage: Recording) -> None:
    token = api.token()
    later = window(T0_MS + 3_600_000, T0_MS + 7_200_000)
    for kind in ("hls.m3u8", "clip.mp4"):
        for camera in (CAM, "cam-empty"):
            reply = await api.get(path(kind, camera), token, params=later)
            assert reply.status == 404, (kind, camera)
            problem = reply.json()
            assert problem["type"] == "urn:argus:playback:no-footage"
            assert "no recorded footage" in problem["detail"]
    # A timeline of nothing is an answer, not an error: no spans.
    timeline = await api.get(path("timeline"), token, params=later)
    assert timeline.status == 200
    assert timeline.json()["spans"] == []


@pytest.mark.parametrize("kind", KINDS)
async def test_inverted_enormous_and_malformed_ranges(api: Api, footage: Recording, kind: str) -> None:
    token = api.token()
    inverted = await api.get(path(kind), token, params=window(T0_MS + MIN, T0_MS))
    assert (inverted.status, inverted.json()["type"]) == (400, "urn:argus:playback:inverted-range")
    empty = await api.get(path(kind), token, params=window(T0_MS, T0_MS))
    assert empty.status == 400
    enormous = await api.get(path(kind), token, params=window(T0_MS - 400 * 86_400_000, T0_MS))
    assert (enormous.status, enormous.json()["type"]) == (400, "urn:argus:playback:range-too-long")
    assert enormous.json()["max_s"] > 0
    malformed = await api.get(path(kind), token, params={"from": "yesterday", "until": iso(T0_MS)})
    assert (malformed.status, malformed.json()["parameter"]) == (400, "from")
    zoneless = await api.get(path(kind), token, params={"from": "2026-03-09T02:00:00", "until": iso(T0_MS + MIN)})
    assert zoneless.status == 400
    missing = await api.get(path(kind), token, params={"until": iso(T0_MS)})
    assert missing.status == 400


async def test_a_token_needs_a_playback_grant_for_that_camera_and_time(api: Api, footage: Recording, bus: Bus) -> None:
    span = window(T0_MS, T0_MS + 2 * MIN)
    assert (await api.get(path("timeline"), None, params=span)).status == 401
    live_only = api.token((CAM,), actions=("live",), subject="viewer")
    other_camera = api.token(("cam-other",), subject="other")
    for token in (live_only, other_camera):
        for kind in KINDS:
            reply = await api.get(path(kind), token, params=span)
            assert reply.status == 403, kind
            assert reply.json()["type"] == "urn:argus:playback:forbidden"
    denied = [e for e in await audit_events(bus) if e.outcome == "denied"]
    assert len(denied) == 6
    assert {e.actor.subject for e in denied} == {"viewer", "other"}
    assert all(e.camera == CAM and e.footage_start_ns == T0_MS * 10**6 for e in denied)

    # A partner granted one minute sees that minute, and nothing outside it: segments that start before the
    # window are left out of a playlist, and a clip starts on the first keyframe inside the window.
    lo = T0_MS // 1000 + 61  # one second into a segment
    partner = api.token((CAM,), subject="pc-1", footage=(lo, lo + 60))
    inside = await api.get(path("hls.m3u8"), partner, params=window(lo * 1000, lo * 1000 + MIN))
    assert inside.status == 200
    assert inside.text.count("#EXTINF") == 9  # the segments wholly inside it
    assert f"#EXT-X-PROGRAM-DATE-TIME:{iso(lo * 1000 + 5000)}" in inside.text
    outside = await api.get(path("hls.m3u8"), partner, params=window(lo * 1000 - 1000, lo * 1000 + MIN))
    assert outside.status == 403
    clip = await api.get(path("clip.mp4"), partner, params=window(lo * 1000 + 500, lo * 1000 + 29_000))
    assert clip.status == 200, clip.text
    _, packets = await asyncio.to_thread(demux, clip.body)
    assert packets[0].keyframe
    assert len(packets) == 5 * (30 - 2)  # from the keyframe at +2 s into the segment (one every 2 s) to +30 s
    operator = await api.get(path("clip.mp4"), api.token(), params=window(lo * 1000 + 500, lo * 1000 + 29_000))
    _, packets = await asyncio.to_thread(demux, operator.body)
    assert len(packets) == 5 * 30  # from the keyframe at or before the start: the segment's first


async def test_every_request_is_audited_and_refused_when_it_cannot_be(
    api: Api, footage: Recording, bus: Bus, pool: asyncpg.Pool, store: ObjectStore, nats_url: str
) -> None:
    token = api.token((CAM,), subject="op-7")
    span = window(T0_MS, T0_MS + MIN)
    for kind in KINDS:
        assert (await api.get(path(kind), token, params=span)).status == 200
    assert (await api.get(path("seek"), token, params={"at": iso(T0_MS + 5000)})).status == 200
    events = [e for e in await audit_events(bus) if e.actor.subject == "op-7"]
    assert [e.action for e in events] == [
        "playback.timeline",
        "playback.playlist",
        "playback.clip",
        "playback.clip.complete",
        "playback.seek",
    ]
    assert all(e.service == "api" and e.camera == CAM and e.at_ns > 0 for e in events)
    assert all(e.footage_start_ns is not None and e.footage_end_ns is not None for e in events)

    # An api whose bus is gone cannot audit: it answers 503 and shows nothing.
    dead = await Bus.connect(nats_url, name="dead")
    await dead.close()
    async for server in _server(api, pool, store, AuditEmitter(dead, "api", retry_for_s=0.5)):
        for kind in KINDS:
            reply = await api.get(f"http://127.0.0.1:{server.port}{path(kind)}", token, params=span)
            assert reply.status == 503, kind
            assert reply.json()["type"] == "urn:argus:playback:audit-unavailable"


async def _server(api: Api, pool: asyncpg.Pool, store: ObjectStore, emitter: AuditEmitter) -> AsyncIterator[TestServer]:
    app = web.Application(middlewares=[problem_middleware, auth_middleware])
    app[VERIFIER_KEY] = api.app[VERIFIER_KEY]
    app[cameras.POOL_KEY] = pool
    playback.routes(app)
    playback.setup(app, store=store, emitter=emitter, registry=CollectorRegistry())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_a_segment_missing_from_storage_is_a_clear_error_and_a_fault(
    api: Api, footage: Recording, store: ObjectStore, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    lost = footage.segments[3]
    await store.delete_many(store.config.recordings_bucket, [lost.row.object_key])
    token = api.token()
    playlist = await api.get(path("hls.m3u8"), token, params=window(T0_MS, T0_MS + MIN))
    assert playlist.status == 200  # the playlist comes from the index; the loss shows when the segment is fetched
    uri = [line for line in playlist.text.splitlines() if line.startswith("/api/")][3]
    with caplog.at_level(logging.ERROR, logger="argus_api.playback"):
        reply = await api.get(uri)
        again = await api.get(uri)
    assert reply.status == again.status == 500
    problem = reply.json()
    assert problem["type"] == "urn:argus:playback:segment-missing"
    assert problem["object_key"] == lost.row.object_key
    assert problem["fault"] is True
    clip = await api.get(path("clip.mp4"), token, params=window(T0_MS, T0_MS + MIN))
    assert clip.status == 500
    assert clip.headers["Content-Type"].startswith("application/problem+json")
    assert clip.json()["object_key"] == lost.row.object_key
    # Said loudly: an error log line per request, a metric, and one service event per object per minute.
    assert sum("missing from storage" in r.getMessage() for r in caplog.records) >= 2
    assert api.metric("argus_playback_segment_missing_total", camera=CAM) == 3
    (event,) = await service_events(bus)
    assert (event.kind, event.level, event.camera) == ("segment_missing", "error", CAM)
    assert event.details["object_key"] == lost.row.object_key
    # The rest of the footage still plays.
    assert (await api.get(path("clip.mp4"), token, params=window(T0_MS + 30_000, T0_MS + MIN))).status == 200


async def test_a_segment_lost_while_a_clip_streams_cuts_the_download(
    api: Api, index: Index, store: ObjectStore, bus: Bus, pool: asyncpg.Pool
) -> None:
    """Once the first bytes are out, a failure can only be said by cutting the connection: the client sees an
    incomplete body (never a short success), the record says failed, and the loss is a fault."""
    big = await asyncio.to_thread(stock_segment, "h264", 1280, 720, fps=25, gop_s=2, bitrate=4_000_000)
    rec = Recording("cam-lost", stock_rows("cam-lost", big, T0_MS, 10))
    await store_recording(index, store, rec)
    url = f"{api.url}{path('clip.mp4', 'cam-lost')}"

    def small_window(addr: Any) -> socket.socket:
        family, kind, proto, _, _ = addr
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        return sock

    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_window)) as http,
        http.get(url, params=window(T0_MS, T0_MS + MIN), headers={"Authorization": f"Bearer {api.token()}"}) as r,
    ):
        assert r.status == 200
        clip_id = r.headers["X-Argus-Clip-Id"]
        await r.content.read(1024)
        await store.delete_many(store.config.recordings_bucket, [rec.segments[8].row.object_key])
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    row = await pool.fetchrow("SELECT status, detail, sha256 FROM playback_clips WHERE id = $1", clip_id)
    assert row is not None
    assert row["status"] == "failed"
    assert rec.segments[8].row.object_key in row["detail"]
    assert row["sha256"] is None
    (event,) = await service_events(bus)
    assert event.details["object_key"] == rec.segments[8].row.object_key
    (done,) = [e for e in await audit_events(bus) if e.action == "playback.clip.complete"]
    assert (done.outcome, done.details["status"]) == ("failure", "failed")
