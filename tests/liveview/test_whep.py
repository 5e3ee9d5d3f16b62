"""WHEP end to end with aiortc viewers: simcam -> ingest -> NATS -> liveview -> viewer, on loopback only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from argus_devstack.backends import NatsHandle
from argus_liveview.config import LiveviewSettings
from tests.ingest.support import eventually
from tests.liveview.support import (
    TEST_SETTINGS,
    audit_events,
    camera_stack,
    liveview_in_process,
    make_keys,
    percentile,
)
from tests.liveview.whep_client import WhepViewer
from tests.simcam.media_env import CameraDef

pytestmark = pytest.mark.slow

ONE = {"cam1": CameraDef(sub=None)}


async def test_an_aiortc_viewer_gets_every_frame_from_the_latest_keyframe(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    async with camera_stack(nats_url, database_url, keys, ONE), liveview_in_process(nats_url, keys) as lv:
        viewer = WhepViewer(lv.url, "cam1", keys.token(["cam1"]))
        try:
            assert await viewer.open(), viewer.problem
            assert viewer.served_stream == "main"
            assert viewer.location is not None
            assert viewer.location.startswith("/whep/sessions/")
            await eventually(lambda: viewer.received.frames >= 150, within_s=30, what="150 pictures decoded")
            r = viewer.received
            stats = await viewer.stats()
            # Every picture decoded and carrying its time code, in order, none missing or repeated (the camera
            # sends 25 fps: 40 ms apart), from the keyframe the liveview cached to live.
            assert r.unreadable == 0
            steps = [b - a for a, b in zip(r.codes, r.codes[1:], strict=False)]
            assert set(steps) == {40}, steps
            assert stats["packetsLost"] == 0
            ttff = r.summary()["ttff_ms"]
            assert ttff is not None
            assert ttff < 2000, ttff  # the cached GOP's keyframe, not the next one
            # Once caught up (the GOP is sent at 8x real time) the viewer is live.
            live = r.latencies_ms[75:]
            assert percentile(live, 0.5) < 500, live
            assert await lv.metric("argus_liveview_viewers") == 1
            assert await viewer.delete() == 200
            await eventually(lambda: viewer.ended.is_set(), within_s=10, what="the peer closed")
        finally:
            await viewer.close()
        assert await lv.metric("argus_liveview_viewers") == 0
        assert await lv.metric("argus_liveview_sessions_total") == 1
        assert await lv.metric("argus_liveview_first_frame_seconds_count") == 1
        assert await lv.metric("argus_liveview_frames_sent_total") >= 150
        start, end = await audit_events(lv.bus)
        assert (start.action, end.action) == ("live.view.start", "live.view.end")
        assert start.actor.subject == end.actor.subject == "op-1"
        assert start.camera == end.camera == "cam1"
        assert start.target == end.target == viewer.location.rsplit("/", 1)[1]
        assert start.details["stream"] == end.details["stream"] == "main"
        assert end.details["reason"] == "deleted"
        assert 1.0 < float(end.details["duration_s"]) < 60
        assert int(end.details["frames"]) >= 150
        assert end.footage_start_ns is not None
        assert end.footage_end_ns is not None
        assert end.footage_end_ns - end.footage_start_ns == pytest.approx(
            float(end.details["duration_s"]) * 1e9, rel=0.05
        )


async def test_the_first_viewer_of_an_unwatched_camera_starts_from_the_ingest_pods_gop(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """Nobody watched the camera: liveview's first demand asks the ingest pod that pulls it for the current GOP so
    far instead of waiting up to a GOP (2 s here) for the next keyframe; with that turned off the first picture is
    one captured after the request."""
    keys = make_keys(tmp_path)
    async with camera_stack(nats_url, database_url, keys, ONE):
        await asyncio.sleep(1.0)  # well into a GOP
        for catchup_timeout_s, caught_up in ((1.0, True), (0.0, False)):
            settings = LiveviewSettings(ice_hosts=("127.0.0.1",), catchup_timeout_s=catchup_timeout_s)
            async with liveview_in_process(nats_url, keys, settings, pod=f"liveview-{caught_up}") as lv:
                viewer = WhepViewer(lv.url, "cam1", keys.token(["cam1"]))
                try:
                    asked = time.time() * 1000
                    assert await viewer.open(), viewer.problem
                    await eventually(lambda v=viewer: v.received.frames >= 5, within_s=30, what="pictures")  # type: ignore[misc]
                finally:
                    await viewer.close()
            first = viewer.received.codes[0]
            assert (first < asked) == caught_up, (catchup_timeout_s, asked - first)
            assert set(b - a for a, b in zip(viewer.received.codes, viewer.received.codes[1:], strict=False)) == {40}


async def _media_subscriptions(nats_server: NatsHandle, client: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{nats_server.monitor_url}/connz", params={"subs": "1"}) as response,
    ):
        data = await response.json()
    return [
        sub
        for conn in data.get("connections", [])
        if conn.get("name") == client
        for sub in conn.get("subscriptions_list", [])
        if sub.startswith("argus.media.")
    ]


async def test_one_subscription_per_camera_whatever_the_viewers_and_idle_cameras_are_let_go(
    nats_server: NatsHandle, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    defs = {"cam1": CameraDef(sub=None), "cam2": CameraDef(sub=None)}
    async with (
        camera_stack(nats_server.url, database_url, keys, defs),
        liveview_in_process(nats_server.url, keys) as lv,
    ):
        token = keys.token(["cam1", "cam2"])
        viewers = [WhepViewer(lv.url, camera, token) for camera in ("cam1", "cam1", "cam1", "cam2")]
        try:
            for viewer in viewers:
                assert await viewer.open(), viewer.problem
            await eventually(
                lambda: all(v.received.frames >= 10 for v in viewers), within_s=30, what="every viewer receives"
            )
            subs = await _media_subscriptions(nats_server, "liveview-test")
            assert sorted(subs) == ["argus.media.cam1.main", "argus.media.cam2.main"]
            assert await lv.metric("argus_liveview_cameras_watched") == 2
            for viewer in viewers[:3]:
                assert await viewer.delete() == 200
            # cam1 has no viewer now: after the grace period (1 s in these tests) it is unsubscribed; cam2 stays.
            await eventually(lambda: len(lv.liveview.hub) == 1, within_s=10, what="cam1 let go")
            assert await _media_subscriptions(nats_server, "liveview-test") == ["argus.media.cam2.main"]
            frames = viewers[3].received.frames
            await eventually(lambda: viewers[3].received.frames > frames + 10, within_s=10, what="cam2 goes on")
        finally:
            for viewer in viewers:
                await viewer.close()
        await eventually(lambda: len(lv.liveview.hub) == 0, within_s=10, what="cam2 let go")
        assert await lv.metric("argus_liveview_cameras_watched") == 0


async def test_trickle_ice_and_what_the_session_url_accepts(nats_url: str, database_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    async with camera_stack(nats_url, database_url, keys, ONE), liveview_in_process(nats_url, keys) as lv:
        viewer = WhepViewer(lv.url, "cam1", keys.token(["cam1"]))
        async with aiohttp.ClientSession() as http:
            try:
                # The offer goes without candidates; they follow in a PATCH, with one we cannot reach from loopback.
                assert await viewer.open(trickle=["a=candidate:2 1 udp 2130706431 192.0.2.77 9 typ host"]), (
                    viewer.problem
                )
                session_url = f"{lv.url}{viewer.location}"
                (session,) = lv.liveview.sessions.sessions()
                remote = session.transceiver.sender.transport.transport.getRemoteCandidates()
                assert [(c.ip, c.type) for c in remote] == [("127.0.0.1", "host")]
                await eventually(lambda: viewer.received.frames >= 5, within_s=30, what="pictures after trickle ICE")
                mine = {"Authorization": f"Bearer {keys.token(['cam1'])}"}
                frag = "a=candidate:3 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
                restart = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n"
                async with http.patch(
                    session_url, data=restart, headers={**mine, "Content-Type": "application/trickle-ice-sdpfrag"}
                ) as response:
                    assert response.status == 422
                    assert "restart" in (await response.json())["detail"]
                async with http.patch(session_url, data=frag, headers={**mine, "Content-Type": "text/plain"}) as r:
                    assert r.status == 415
                # Only the session's own subject may touch it.
                other = {"Authorization": f"Bearer {keys.token(['cam1'], subject='op-2')}"}
                async with http.delete(session_url, headers=other) as response:
                    assert response.status == 403
                async with http.delete(session_url) as response:
                    assert response.status == 401
                async with http.delete(f"{lv.url}/whep/sessions/nope", headers=mine) as response:
                    assert response.status == 404
                async with http.delete(session_url, headers=mine) as response:
                    assert response.status == 200
                async with http.delete(session_url, headers=mine) as response:
                    assert response.status == 404
            finally:
                await viewer.close()


async def test_bad_offers_get_a_clear_answer(nats_url: str, database_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    async with (
        camera_stack(nats_url, database_url, keys, ONE),
        liveview_in_process(nats_url, keys, TEST_SETTINGS) as lv,
        aiohttp.ClientSession() as http,
    ):
        auth = {"Authorization": f"Bearer {keys.token(['cam1'])}", "Content-Type": "application/sdp"}
        good = WhepViewer(lv.url, "cam1", keys.token(["cam1"]))
        try:
            good.pc.addTransceiver("video", direction="recvonly")
            await good.pc.setLocalDescription(await good.pc.createOffer())
            assert good.pc.localDescription is not None
            offer = good.pc.localDescription.sdp
        finally:
            await good.close()
        audio = WhepViewer(lv.url, "cam1", keys.token(["cam1"]))
        try:
            audio.pc.addTransceiver("audio", direction="recvonly")
            await audio.pc.setLocalDescription(await audio.pc.createOffer())
            assert audio.pc.localDescription is not None
            audio_only = audio.pc.localDescription.sdp
        finally:
            await audio.close()
        cases = [
            ("/whep/cam1", "v=0\r\nnot sdp at all", auth, 400, "SDP"),
            ("/whep/cam1", "hello", auth, 400, "not an SDP offer"),
            ("/whep/cam1", offer, {**auth, "Content-Type": "text/plain"}, 415, "application/sdp"),
            ("/whep/cam1/thumbnail", offer, auth, 404, "main or sub"),
            ("/whep/cam1", audio_only, auth, 400, "video"),
            ("/whep/cam1", offer.replace("a=recvonly", "a=sendonly"), auth, 400, "does not receive video"),
            ("/whep/cam1", offer.replace("H264", "H999"), auth, 400, "H.264"),
        ]
        for path, body, headers, status, words in cases:
            async with http.post(f"{lv.url}{path}", data=body, headers=headers) as response:
                problem = await response.json(content_type=None)
                assert response.status == status, (path, problem)
                assert response.content_type == "application/problem+json"
                assert words in problem["detail"], problem
        assert lv.liveview.sessions.sessions() == []
        assert await lv.metric("argus_liveview_viewers") == 0
