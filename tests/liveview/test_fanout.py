"""Fan-out: many viewers of one camera and one viewer each of many cameras at once (viewers in processes of their
own, counting every access unit they receive), and a viewer that stops reading cut off without disturbing others."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from argus_devstack.backends import NatsHandle
from tests.ingest.support import eventually
from tests.liveview.support import camera_stack, liveview_in_process, make_keys, viewer_processes
from tests.liveview.test_whep import _media_subscriptions
from tests.simcam.media_env import CameraDef

pytestmark = pytest.mark.slow


def check_received(r: dict[str, Any], seconds: float) -> None:
    """A viewer got the camera's 25 fps for the time it watched: from a keyframe, every unit well formed, no RTP
    packet lost, no stall."""
    assert r["frames"] >= 25 * seconds * 0.85, r
    assert r["keyframes"] >= seconds / 2 - 1, r  # a keyframe every 2 s
    assert r["malformed"] == 0, r
    assert r["packetsLost"] == 0, r
    assert r["packetsReceived"] > r["frames"], r
    # No stall: a camera restarting (a lost lease, a reconnect) leaves 2 s or more; 29 viewer processes, ingest and
    # live view on CI's two cores leave scheduling hiccups up to about half a second.
    assert r["max_gap_ms"] < 1000, r
    assert not r["ended_by_server"], r


async def test_twenty_viewers_of_one_camera_and_one_viewer_each_of_ten(
    nats_server: NatsHandle, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    cameras = [f"cam{i}" for i in range(10)]
    seconds = 10.0
    async with (
        camera_stack(nats_server.url, database_url, keys, {c: CameraDef(sub=None) for c in cameras}),
        liveview_in_process(nats_server.url, keys) as lv,
    ):
        token = keys.token(cameras)
        jobs = [
            {"cameras": ["cam0"], "count": 10, "token": token, "seconds": seconds},
            {"cameras": ["cam0"], "count": 10, "token": token, "seconds": seconds},
            {"cameras": cameras[1:], "count": 1, "token": token, "seconds": seconds},
        ]
        async with viewer_processes(lv.url, jobs) as procs:
            await eventually(lambda: sum(len(p.ready) for p in procs) == 29, within_s=60, what="29 sessions")
            assert all(item["ok"] for p in procs for item in p.ready), [p.ready for p in procs]
            assert await lv.metric("argus_liveview_viewers") == 29
            # One bus subscription per camera, however many watch it.
            subs = await _media_subscriptions(nats_server, "liveview-test")
            assert sorted(subs) == sorted(f"argus.media.{c}.main" for c in cameras)
            results = [r for p in procs for r in await p.wait(90)]
        assert len(results) == 29
        for r in results:
            check_received(r, seconds)
        assert sorted(r["camera"] for r in results) == sorted(["cam0"] * 20 + cameras[1:])
        dropped = {
            tuple(sorted(sample.labels.items())): sample.value
            for family in lv.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "argus_liveview_dropped_frames_total" and sample.value
        }
        assert not dropped, dropped


async def test_a_viewer_that_stops_reading_is_cut_off_and_the_others_never_notice(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    seconds = 16.0
    async with (
        camera_stack(nats_url, database_url, keys, {"cam1": CameraDef(sub=None)}),
        liveview_in_process(nats_url, keys) as lv,  # viewer_timeout_s = 4 in these tests
    ):
        token = keys.token(["cam1"])
        jobs = [
            {"cameras": ["cam1"], "count": 2, "token": token, "seconds": seconds},  # will freeze
            {"cameras": ["cam1"], "count": 3, "token": token, "seconds": seconds},
        ]
        async with viewer_processes(lv.url, jobs) as (frozen, healthy):
            await eventually(lambda: len(frozen.ready) + len(healthy.ready) == 5, within_s=30, what="5 sessions")
            await asyncio.sleep(3.0)
            os.kill(frozen.proc.pid, signal.SIGSTOP)  # it reads nothing more and answers nothing
            try:
                stopped = asyncio.get_running_loop().time()
                await eventually(
                    lambda: len(lv.liveview.sessions.sessions()) == 3, within_s=15, what="the frozen viewers cut off"
                )
                took = asyncio.get_running_loop().time() - stopped
                assert 3.0 < took < 10.0, took
            finally:
                os.kill(frozen.proc.pid, signal.SIGKILL)
            results = await healthy.wait(60)
        assert len(results) == 3
        for r in results:
            check_received(r, seconds)
        ended = {
            s.labels["reason"]: s.value
            for m in lv.metrics.ended.collect()
            for s in m.samples
            if s.name.endswith("total")
        }
        assert ended == {"viewer_timeout": 2, "deleted": 3}  # the healthy ones said goodbye when done
