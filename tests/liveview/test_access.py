"""Who may watch: a token granting live view of the camera, audited both ways, and only until the token expires."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from tests.ingest.support import eventually
from tests.liveview.support import audit_events, camera_stack, liveview_in_process, make_keys
from tests.liveview.whep_client import WhepViewer
from tests.simcam.media_env import CameraDef

pytestmark = pytest.mark.slow

ONE = {"cam1": CameraDef(sub=None)}


async def test_an_expired_token_ends_its_session(nats_url: str, database_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    async with camera_stack(nats_url, database_url, keys, ONE), liveview_in_process(nats_url, keys) as lv:
        short = WhepViewer(lv.url, "cam1", keys.token(["cam1"], subject="op-short", ttl_s=6))
        long = WhepViewer(lv.url, "cam1", keys.token(["cam1"], subject="op-long"))
        try:
            started = time.monotonic()
            assert await short.open(), short.problem
            assert await long.open(), long.problem
            await eventually(lambda: short.received.frames >= 10, within_s=30, what="the short token's viewer plays")
            # The token says exp = issue time + 6 s (whole seconds): the server closes the peer then.
            await eventually(lambda: short.ended.is_set(), within_s=15, what="the session ended by the server")
            took = time.monotonic() - started
            assert 4.0 < took < 9.0, took
            assert short.pc.connectionState == "closed"
            frames = long.received.frames
            await eventually(lambda: long.received.frames > frames + 25, within_s=10, what="the other viewer goes on")
            assert not long.ended.is_set()
        finally:
            await short.close()
            await long.close()
        await eventually(lambda: not lv.liveview.sessions.sessions(), within_s=10, what="sessions over")
        assert await lv.metric("argus_liveview_sessions_ended_total") == 2
        events = await audit_events(lv.bus)
        ends = {e.actor.subject: e for e in events if e.action == "live.view.end"}
        assert ends["op-short"].details["reason"] == "token_expired"
        assert 4.0 < float(ends["op-short"].details["duration_s"]) < 9.0
        assert ends["op-long"].details["reason"] == "peer_closed"  # the viewer closed its peer connection
        starts = [e for e in events if e.action == "live.view.start"]
        assert {e.actor.subject for e in starts} == {"op-short", "op-long"}
        assert all(e.outcome == "success" and e.actor.roles == ("operator",) for e in starts)


async def test_no_grant_no_view_and_the_refusal_is_audited(nats_url: str, database_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    async with (
        camera_stack(nats_url, database_url, keys, ONE),
        liveview_in_process(nats_url, keys) as lv,
        aiohttp.ClientSession() as http,
    ):
        offer = "v=0\r\n"
        url = f"{lv.url}/whep/cam1"
        sdp = {"Content-Type": "application/sdp"}
        async with http.post(url, data=offer, headers=sdp) as response:
            assert response.status == 401
            assert "Bearer" in response.headers["WWW-Authenticate"]
        async with http.post(url, data=offer, headers={**sdp, "Authorization": "Bearer not-a-token"}) as response:
            assert response.status == 401
        other_camera = keys.token(["cam2"], subject="op-other")
        async with http.post(url, data=offer, headers={**sdp, "Authorization": f"Bearer {other_camera}"}) as r:
            assert r.status == 403
            assert "cam1" in (await r.json(content_type=None))["detail"]
        playback_only = keys.token(["cam1"], subject="op-playback", actions=("playback",))
        async with http.post(url, data=offer, headers={**sdp, "Authorization": f"Bearer {playback_only}"}) as r:
            assert r.status == 403
        expired = keys.issuer.issue("op-late", ["operator"], [], ttl_s=1, now=time.time() - 120)
        async with http.post(url, data=offer, headers={**sdp, "Authorization": f"Bearer {expired}"}) as r:
            assert r.status == 401
            assert "expired" in (await r.json(content_type=None))["detail"]
        # The page is public; WHEP preflights are answered for the console's origin.
        async with http.get(f"{lv.url}/") as response:
            assert response.status == 200
            assert "WHEP" in await response.text()
        async with http.options(
            url, headers={"Origin": "http://console", "Access-Control-Request-Method": "POST"}
        ) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        events = await audit_events(lv.bus)
        denied = [(e.actor.subject, e.camera, e.outcome, e.action) for e in events]
        assert denied == [
            ("op-other", "cam1", "denied", "live.view.start"),
            ("op-playback", "cam1", "denied", "live.view.start"),
        ]
        assert await lv.metric("argus_liveview_viewers") == 0
