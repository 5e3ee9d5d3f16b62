"""The timeline: merged spans, gaps with their causes, holes nobody explained; small for a month; audited."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_recorder.index import Index
from tests.playback.media import HOUR, Recording, recorded_hour, stock_segment, store_recording
from tests.playback.support import T0, T0_MS, Api, audit_events, iso

CAM = "cam-tl"


@pytest.fixture
async def hour(index: Index, store: ObjectStore) -> Recording:
    first = await asyncio.to_thread(stock_segment, "h264")
    second = await asyncio.to_thread(stock_segment, "h264", 256, 144)
    rec = recorded_hour(CAM, T0_MS, first=first, second=second)
    await store_recording(index, store, rec, upload=False)  # the timeline reads the index only
    return rec


async def test_a_recorded_hour_gives_its_spans_and_gaps(api: Api, hour: Recording, bus: Bus) -> None:
    token = api.token((CAM,))
    reply = await api.get(
        f"/api/v1/cameras/{CAM}/playback/timeline", token, params={"from": iso(T0_MS), "until": iso(T0_MS + 3_600_000)}
    )
    assert reply.status == 200, reply.text
    body = reply.json()
    assert [(s["start"], s["end"]) for s in body["spans"]] == [
        (iso(T0_MS + lo), iso(T0_MS + hi)) for lo, hi in HOUR.spans
    ]
    assert sum(s["segments"] for s in body["spans"]) == len(hour.segments)
    gaps = [(g["start"], g["end"], g["cause"], g["source"]) for g in body["gaps"]]
    assert gaps == [
        (iso(T0_MS + 1_200_000), iso(T0_MS + 1_320_000), "camera_offline", "recorder"),
        (iso(T0_MS + 2_400_000), iso(T0_MS + 2_412_000), "unknown", "index"),
    ]
    assert body["recorded_s"] == 3600 - 120 - 12
    assert body["bookmarks"] == []
    assert body["events"] == []
    (event,) = [e for e in await audit_events(bus) if e.action == "playback.timeline"]
    assert event.outcome == "success"
    assert event.camera == CAM
    assert event.actor.subject == "op-1"
    assert (event.footage_start_ns, event.footage_end_ns) == (T0_MS * 10**6, (T0_MS + 3_600_000) * 10**6)


async def test_a_window_inside_the_hour_is_clipped_to_it(api: Api, hour: Recording) -> None:
    start, end = T0_MS + 1_000_000, T0_MS + 1_400_003
    reply = await api.get(
        f"/api/v1/cameras/{CAM}/playback/timeline", api.token(), params={"from": iso(start), "until": iso(end)}
    )
    body = reply.json()
    assert [(s["start"], s["end"]) for s in body["spans"]] == [
        (iso(start), iso(T0_MS + 1_200_000)),
        (iso(T0_MS + 1_320_000), iso(end)),
    ]
    assert [g["cause"] for g in body["gaps"]] == ["camera_offline"]


async def test_a_month_of_one_camera_is_a_small_answer(api: Api, index: Index, pool: asyncpg.Pool) -> None:
    """31 days of 6 s segments (446,400 rows) with a minute missing every 24 hours: spans run across UTC midnight,
    where a long timeline is cut into days for the server and joined again."""
    days = 31
    await index.ensure_days(*((T0 + timedelta(days=d)).date() for d in range(-1, days + 1)))
    async with pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO segments (camera, stream, start_time, end_time, duration_ms, frames, keyframes, bytes, sha256,
                                  codec, width, height, object_key, init_key, time_trusted, session, first_seq,
                                  last_seq)
            SELECT 'cam-month', 'main', t, t + interval '6 s', 6000, 30, 3, 20000, decode(repeat('ab', 32), 'hex'),
                   'h264', 320, 180, 'cam-month/' || i || '.m4s', 'cam-month/init/0.mp4', true, 's', i * 30,
                   i * 30 + 29
            FROM generate_series(0, $2 * 14400 - 1) AS i,
                 LATERAL (SELECT $1::timestamptz + i * interval '6 s' AS t) AS times
            WHERE i % 14400 NOT BETWEEN 7200 AND 7209
            """,
            T0,
            days,
        )
    reply = await api.get(
        "/api/v1/cameras/cam-month/playback/timeline",
        api.token(),
        headers={"Accept-Encoding": "identity"},
        params={"from": iso(T0_MS), "until": iso(T0_MS + days * 86_400_000)},
    )
    assert reply.status == 200, reply.text
    body = reply.json()
    assert len(body["spans"]) == days + 1
    assert body["spans"][1]["start"] == iso(T0_MS + 43_260_000)  # 12 h and a minute in ...
    assert body["spans"][1]["end"] == iso(T0_MS + 86_400_000 + 43_200_000)  # ... to 12 h into the next day
    assert sum(s["segments"] for s in body["spans"]) == days * 14390
    assert len(body["gaps"]) == days  # at noon, and no recorder row says why: holes
    assert all(g["cause"] == "unknown" for g in body["gaps"])
    assert len(reply.body) < 16_000, len(reply.body)
