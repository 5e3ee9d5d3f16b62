"""Seek and clip over simcam footage, whose every frame carries the time it was captured (the OSD time code)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_recorder.index import Index
from tests.playback.media import (
    Recording,
    demux,
    simcam_segments,
    stock_rows,
    stock_segment,
    store_recording,
    stored_packets,
    timecodes,
)
from tests.playback.support import T0_MS, Api, audit_events, decode_errors, ffprobe, iso

CAM = "cam-sc"
FPS = 10
GOP_MS = 1000


@pytest.fixture
async def footage(index: Index, store: ObjectStore) -> Recording:
    """A minute of simcam footage (10 fps, a keyframe a second, 6 s segments), then 30 s of nothing, then a minute."""
    first = await asyncio.to_thread(simcam_segments, CAM, T0_MS, 60, fps=FPS, gop_s=1)
    second = await asyncio.to_thread(simcam_segments, CAM, T0_MS + 90_000, 60, fps=FPS, gop_s=1)
    rec = Recording(CAM, [*first, *second])
    await store_recording(index, store, rec)
    return rec


def seek_path(camera: str = CAM) -> str:
    return f"/api/v1/cameras/{camera}/playback/seek"


async def test_an_instant_maps_to_its_segment_and_playback_starts_there(api: Api, footage: Recording, bus: Bus) -> None:
    token = api.token((CAM,))
    at = T0_MS + 23_456
    reply = await api.get(seek_path(), token, params={"at": iso(at)})
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["in_gap"] is False
    assert body["segment"]["start"] == iso(T0_MS + 18_000)
    assert body["segment"]["end"] == iso(T0_MS + 24_000)
    assert body["offset_s"] == pytest.approx(5.456)
    assert body["plays_from"] == iso(at)
    playlist = await api.get(body["playlist"], token)
    assert playlist.status == 200, playlist.text
    assert "#EXT-X-START:TIME-OFFSET=5.456,PRECISE=YES" in playlist.text
    assert playlist.text.count("#EXTINF") == 17  # the rest of the first minute and all of the second
    # What a player shows at that offset is the frame captured at the instant (to the frame, within a GOP).
    init_uri = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', playlist.text)[0]
    first_uri = next(line for line in playlist.text.splitlines() if line.startswith("/api/v1/playback/s/"))
    init = (await api.get(init_uri)).body
    media = (await api.get(first_uri)).body
    frames = await asyncio.to_thread(timecodes, init + media)
    shown = [code for t, code in frames if t <= 5.456 + 1e-6][-1]
    assert shown is not None
    assert 0 <= at - shown < GOP_MS
    assert at - shown < 1000 // FPS  # in fact the very frame
    (event,) = [e for e in await audit_events(bus) if e.action == "playback.seek"]
    assert event.footage_start_ns == at * 10**6


async def test_an_instant_in_a_gap_plays_from_the_next_footage(api: Api, footage: Recording) -> None:
    token = api.token((CAM,))
    reply = await api.get(seek_path(), token, params={"at": iso(T0_MS + 75_000)})
    body = reply.json()
    assert body["in_gap"] is True
    assert body["segment"]["start"] == iso(T0_MS + 90_000)
    assert body["offset_s"] == 0
    nothing = await api.get(seek_path(), token, params={"at": iso(T0_MS + 75_000), "window": "10"})
    assert nothing.status == 404
    assert nothing.json()["type"] == "urn:argus:playback:no-footage"


async def test_a_clip_is_the_stored_packets_from_the_keyframe_before_its_start(
    api: Api, footage: Recording, bus: Bus, tmp_path: Path
) -> None:
    token = api.token((CAM,))
    start, end = T0_MS + 7_300, T0_MS + 31_700
    reply = await api.get(
        f"/api/v1/cameras/{CAM}/playback/clip.mp4", token, params={"from": iso(start), "until": iso(end)}
    )
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "video/mp4"
    assert reply.headers["Transfer-Encoding"] == "chunked"
    clip_id = reply.headers["X-Argus-Clip-Id"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(reply.body)

    probe = await asyncio.to_thread(ffprobe, str(path))
    (stream,) = probe["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    duration = float(probe["format"]["duration"])
    assert abs(duration - (end - start) / 1000) <= GOP_MS / 1000  # the requested length, within a GOP
    assert await asyncio.to_thread(decode_errors, str(path)) == ""

    # Its packets are the stored ones, byte for byte, from the keyframe at or before the start to the end.
    stored = [(t, p) for t, p in stored_packets(footage.segments)]
    first = max(i for i, (t, p) in enumerate(stored) if p.keyframe and t <= start)
    wanted = [p.data for t, p in stored[first:] if t < end]
    _, got = await asyncio.to_thread(demux, reply.body)
    assert len(got) == len(wanted) == int(stream["nb_read_packets"])
    assert [p.data for p in got] == wanted
    assert got[0].keyframe
    codes = await asyncio.to_thread(timecodes, reply.body)
    assert codes[0][1] == T0_MS + 7_000  # the keyframe at or before 7.3 s
    assert codes[-1][1] == T0_MS + 31_600

    # The digest: reported by the clip's record (and its audit event), equal to the bytes received.
    digest = hashlib.sha256(reply.body).hexdigest()
    record = await api.get(f"/api/v1/playback/clips/{clip_id}", token)
    assert record.status == 200, record.text
    info = record.json()
    assert (info["status"], info["sha256"], info["bytes"]) == ("complete", digest, len(reply.body))
    assert (info["start"], info["packets"]) == (iso(T0_MS + 7_000), len(wanted))
    events = {e.action: e for e in await audit_events(bus)}
    assert events["playback.clip"].target == clip_id
    assert events["playback.clip"].footage_start_ns == start * 10**6
    assert events["playback.clip.complete"].details["sha256"] == digest


async def test_a_clip_is_streamed_as_it_is_built(
    api: Api, index: Index, store: ObjectStore, pool: asyncpg.Pool
) -> None:
    """A client that stops reading holds the clip back: the api writes it piece by piece as it is cut, and does not
    run ahead of the client (nor build it whole in memory first)."""
    big = await asyncio.to_thread(stock_segment, "h264", 1280, 720, fps=25, gop_s=2, bitrate=4_000_000)
    rec = Recording("cam-big", stock_rows("cam-big", big, T0_MS, 10))
    await store_recording(index, store, rec)
    total = sum(len(s.media) for s in rec.segments)
    assert total > 20_000_000
    token = api.token()
    url = f"{api.url}/api/v1/cameras/cam-big/playback/clip.mp4"
    params = {"from": iso(T0_MS), "until": iso(T0_MS + 60_000)}

    def small_window(addr: Any) -> socket.socket:
        family, kind, proto, _, _ = addr
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        return sock

    connector = aiohttp.TCPConnector(socket_factory=small_window)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200
        clip_id = response.headers["X-Argus-Clip-Id"]
        head = await response.content.read(1024)
        assert head[4:8] == b"ftyp"
        await asyncio.sleep(1.0)  # not reading: the api waits for us
        status = await pool.fetchval("SELECT status FROM playback_clips WHERE id = $1", clip_id)
        assert status == "running"
        sent = api.metric("argus_playback_clip_bytes_total")
        assert 0 < sent < total / 2  # written in pieces, and held back while we do not read
        body = head + await response.read()
    assert await pool.fetchval("SELECT status FROM playback_clips WHERE id = $1", clip_id) == "complete"
    _, packets = await asyncio.to_thread(demux, body)
    assert [p.data for p in packets] == [p.data for _, p in stored_packets(rec.segments)]


async def test_a_gap_inside_a_clip_is_a_held_frame(api: Api, footage: Recording) -> None:
    """The clip's time follows the wall clock: the 30 s without footage inside the range is one frame held."""
    reply = await api.get(
        f"/api/v1/cameras/{CAM}/playback/clip.mp4",
        api.token(),
        params={"from": iso(T0_MS + 55_000), "until": iso(T0_MS + 95_000)},
    )
    assert reply.status == 200, reply.text
    codes = await asyncio.to_thread(timecodes, reply.body)
    times = {code: t for t, code in codes}
    assert times[T0_MS + 90_000] - times[T0_MS + 59_900] == pytest.approx(30.1, abs=0.01)


async def test_a_clip_over_a_change_of_codec_is_refused(api: Api, index: Index, store: ObjectStore) -> None:
    first = await asyncio.to_thread(stock_segment, "h264")
    second = await asyncio.to_thread(stock_segment, "h265")
    rec = Recording(
        "cam-cc", [*stock_rows("cam-cc", first, T0_MS, 2), *stock_rows("cam-cc", second, T0_MS + 12_000, 2)]
    )
    await store_recording(index, store, rec)
    reply = await api.get(
        "/api/v1/cameras/cam-cc/playback/clip.mp4",
        api.token(),
        params={"from": iso(T0_MS), "until": iso(T0_MS + 24_000)},
    )
    assert reply.status == 422
    problem = reply.json()
    assert problem["type"] == "urn:argus:playback:codec-change"
    assert problem["at"] == iso(T0_MS + 12_000)
    h265 = await api.get(
        "/api/v1/cameras/cam-cc/playback/clip.mp4",
        api.token(),
        params={"from": iso(T0_MS + 12_000), "until": iso(T0_MS + 24_000)},
    )
    assert h265.status == 200
    _, packets = await asyncio.to_thread(demux, h265.body)
    assert len(packets) == 2 * second.frames
