"""HLS: a recorded hour plays in ffmpeg start to end; proxied and presigned segments; range requests."""

from __future__ import annotations

import asyncio
import re

import pytest

from argus_api.playback import PlaybackConfig, fmp4
from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_recorder.index import Index
from tests.playback.conftest import ServerFactory
from tests.playback.media import HOUR, Recording, recorded_hour, stock_segment, store_recording
from tests.playback.support import T0_MS, Api, audit_events, ffmpeg_play, iso

CAM = "cam-hls"
HOUR_MS = 3_600_000


@pytest.fixture
async def hour(index: Index, store: ObjectStore) -> Recording:
    first = await asyncio.to_thread(stock_segment, "h264")
    second = await asyncio.to_thread(stock_segment, "h264", 256, 144)  # a new picture size: a new init segment
    rec = recorded_hour(CAM, T0_MS, first=first, second=second)
    await store_recording(index, store, rec)
    return rec


def tags(text: str, name: str) -> list[str]:
    return [line.partition(":")[2] for line in text.splitlines() if line.split(":")[0] == name]


def uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
async def test_the_hour_plays_in_ffmpeg_from_start_to_end(api: Api, hour: Recording, bus: Bus) -> None:
    token = api.token((CAM,))
    url = api.playlist_url(CAM, T0_MS, T0_MS + HOUR_MS)
    reply = await api.get(url, token)
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    text = reply.text
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    assert tags(text, "#EXT-X-VERSION") == ["6"]
    assert tags(text, "#EXT-X-PLAYLIST-TYPE") == ["VOD"]
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert len(uris(text)) == len(hour.segments)
    # Every segment says when it was captured; an init segment at the start and at the change of picture size.
    assert tags(text, "#EXT-X-PROGRAM-DATE-TIME") == [iso(s.row.start_ns // 10**6) for s in hour.segments]
    assert len(tags(text, "#EXT-X-MAP")) == 2
    # Discontinuities before the segment after the outage, after the unexplained hole, and at the new init.
    after = [lines[i + 1] for i, line in enumerate(lines) if line == "#EXT-X-DISCONTINUITY"]
    assert len(after) == 3
    starts = [iso(T0_MS + 1_320_000), iso(T0_MS + 2_412_000), iso(T0_MS + HOUR.codec_change_ms)]
    discontinuous = []
    for i, line in enumerate(lines):
        if line == "#EXT-X-DISCONTINUITY":
            j = i + 1
            while not lines[j].startswith("#EXT-X-PROGRAM-DATE-TIME"):
                j += 1
            discontinuous.append(lines[j].partition(":")[2])
    assert discontinuous == starts
    assert sum(float(d.rstrip(",")) for d in tags(text, "#EXTINF")) == pytest.approx(3600 - 120 - 12)
    (event,) = [e for e in await audit_events(bus) if e.action == "playback.playlist"]
    assert (event.camera, event.outcome, event.details["delivery"]) == (CAM, "success", "proxy")

    played = await asyncio.to_thread(ffmpeg_play, url, token)
    assert played.errors == ""
    assert played.frames == hour.frames()
    # The playlist's timeline is the recorded footage: gaps squeezed out, timestamps continuous.
    assert played.out_time_s == pytest.approx(3600 - 120 - 12, abs=0.5)


async def test_proxied_segments_answer_range_requests(api: Api, hour: Recording) -> None:
    token = api.token((CAM,))
    reply = await api.get(api.playlist_url(CAM, T0_MS + 600_000, T0_MS + 612_000), token)
    text = reply.text
    (init_uri,) = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    first, second = uris(text)
    init = await api.get(init_uri)
    assert init.status == 200
    assert init.body == hour.segments[0].init
    whole = await api.get(second)
    assert whole.status == 200
    assert whole.headers["Accept-Ranges"] == "bytes"
    stored = hour.segments[101]
    assert iso(stored.row.start_ns // 10**6) == iso(T0_MS + 606_000)
    # The bytes are the stored ones but for the decode times, moved to the segment's playlist position (6 s).
    assert len(whole.body) == len(stored.media)
    assert whole.body == fmp4.patch_tfdt(stored.media, 6 * 90_000)
    assert whole.body != stored.media
    part = await api.get(second, headers={"Range": "bytes=100-4099"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-4099/{len(stored.media)}"
    assert part.body == whole.body[100:4100]
    tail = await api.get(second, headers={"Range": "bytes=-500"})
    assert tail.status == 206
    assert tail.body == whole.body[-500:]
    beyond = await api.get(second, headers={"Range": f"bytes={len(stored.media)}-"})
    assert beyond.status == 416
    init_part = await api.get(init_uri, headers={"Range": "bytes=0-7"})
    assert (init_part.status, init_part.body) == (206, hour.segments[0].init[:8])
    # A URL that was not signed by this api, or was changed, is refused.
    forged = second.replace("o=6000", "o=0")
    assert (await api.get(forged)).status == 403
    first_reply = await api.get(first)
    assert first_reply.body == hour.segments[100].media  # position 0: the stored bytes exactly


async def test_presigned_playlists_point_at_the_object_store(make_server: ServerFactory, hour: Recording) -> None:
    api = await make_server(PlaybackConfig(delivery="presigned"))
    token = api.token((CAM,))
    reply = await api.get(api.playlist_url(CAM, T0_MS, T0_MS + 60_000), token)
    assert reply.status == 200, reply.text
    text = reply.text
    entries = uris(text)
    assert len(entries) == 10
    # Stored segments' decode times restart at 0: RFC 8216 wants a discontinuity before each but the first.
    assert text.count("#EXT-X-DISCONTINUITY\n") == 9
    store_host = entries[0].split("/")[2]
    assert store_host != api.url.split("/")[2]
    (init_uri,) = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    assert (await api.get(init_uri)).body == hour.segments[0].init
    for uri, stored in zip(entries, hour.segments, strict=False):
        got = await api.get(uri)
        assert got.status == 200
        assert got.body == stored.media
    ranged = await api.get(entries[0], headers={"Range": "bytes=0-99"})
    assert ranged.status == 206
    assert ranged.body == hour.segments[0].media[:100]
    # A caller may still ask for proxied segments.
    proxied = await api.get(api.playlist_url(CAM, T0_MS, T0_MS + 60_000, delivery="proxy"), token)
    assert "#EXT-X-DISCONTINUITY" not in proxied.text
    assert all(u.startswith("/api/v1/playback/s/") for u in uris(proxied.text))


async def test_presigned_delivery_is_refused_where_it_is_not_enabled(api: Api, hour: Recording) -> None:
    reply = await api.get(api.playlist_url(CAM, T0_MS, T0_MS + 60_000, delivery="presigned"), api.token())
    assert reply.status == 400
    assert reply.json()["type"] == "urn:argus:playback:bad-delivery"
