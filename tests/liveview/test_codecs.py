"""H.265 cameras: browsers get the camera's H.264 sub stream, or an answer that says why there is nothing to show.

simcam cameras have one codec for both streams, so the H.265 camera with an H.264 sub stream is registered as many
real ones come: its main stream from an H.265 simcam camera and its sub stream from an H.264 one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from argus_simcam.encoder import codec_available
from tests.ingest.support import FAST, eventually, world
from tests.liveview.support import liveview_in_process, make_keys
from tests.liveview.whep_client import WhepViewer
from tests.simcam.media_env import SMALL, CameraDef, simcam

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not codec_available("h265"), reason="no libx265 in this FFmpeg"),
]


async def test_h265_main_is_served_as_the_h264_sub_stream_or_refused_saying_why(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    defs = {
        "hevc": CameraDef(codec="h265", mode="live", main=SMALL, sub=None),
        "avc": CameraDef(sub=SMALL),
    }
    settings = FAST.__class__(
        **{
            **{f: getattr(FAST, f) for f in FAST.__struct_fields__},
            "streams": ("main", "sub"),
            "record_streams": ("main", "sub"),
        }
    )
    async with simcam(defs) as env, world(nats_url, database_url) as w:
        await w.add_camera("mixed", env.url("hevc"), sub_url=env.url("avc", "sub"))
        await w.add_camera("hevc-only", env.url("hevc"))
        await w.start_pod("pod-a", settings)
        await eventually(
            lambda: all(w.seen.of(c, st) for c, st in (("mixed", "main"), ("mixed", "sub"), ("hevc-only", "main"))),
            within_s=30,
            what="every stream on the bus",
        )
        async with liveview_in_process(nats_url, keys) as lv:
            token = keys.token(["mixed", "hevc-only"])
            viewer = WhepViewer(lv.url, "mixed", token)
            try:
                assert await viewer.open(), viewer.problem
                assert viewer.served_stream == "sub"
                await eventually(lambda: viewer.received.frames >= 10, within_s=30, what="the sub stream plays")
                assert viewer.received.unreadable == 0  # 640x360: the time code reads at that size too
                (session,) = lv.liveview.sessions.sessions()
                assert (session.stream, session.requested) == ("sub", "main")
            finally:
                await viewer.close()
            refused = WhepViewer(lv.url, "hevc-only", token)
            try:
                assert not await refused.open()
                assert refused.status == 422
                assert refused.problem is not None
                detail = refused.problem["detail"]
                assert "H.265" in detail
                assert "no H.264 stream" in detail
                assert refused.problem["codec"] == "h265"
            finally:
                await refused.close()
            assert await lv.metric("argus_liveview_viewers") == 0
