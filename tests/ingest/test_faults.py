"""simcam's faults against an ingest pod: each gives the health events it should, media resumes, nothing crashes."""

from __future__ import annotations

import asyncio
import time

import pytest

from argus_core.bus import messages as m
from tests.ingest.support import World, eventually, world
from tests.ingest.test_media import check_session
from tests.simcam.media_env import CameraDef, simcam

pytestmark = pytest.mark.slow


def sessions_ok(w: World, camera: str) -> list[list[m.MediaPacket]]:
    """Every session of the camera, each checked on its own (seq from 0, keyframe and config first, ...)."""
    out = []
    for session in w.seen.sessions(camera):
        packets = [p for p in w.seen.of(camera) if p.session == session]
        check_session(packets, "h264")
        out.append(packets)
    return out


def online_after(w: World, camera: str, at_ns: int) -> bool:
    return any(x.state == "online" and x.at_ns > at_ns for x in w.seen.status_of(camera))


async def test_dropped_connection_and_reboot(nats_url: str, database_url: str) -> None:
    async with simcam({"cam1": CameraDef(sub=None)}) as env, world(nats_url, database_url) as w:
        await w.add_camera("cam1", env.url("cam1"))
        pod = await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of("cam1")) >= 50, what="online")

        dropped = time.time_ns()
        env.faults("cam1").drop_connections()
        await eventually(lambda: online_after(w, "cam1", dropped), what="online again after the drop")
        await eventually(lambda: len(w.seen.sessions("cam1")) == 2, what="a second session")

        rebooted = time.time_ns()
        env.faults("cam1").reboot(3.0)
        await eventually(lambda: online_after(w, "cam1", rebooted), within_s=20, what="online after the reboot")
        await eventually(lambda: len(w.seen.of("cam1")) > 0 and w.seen.of("cam1")[-1].seq > 10, what="media")
        assert pod.held == {"cam1"}
        reconnects = pod.metrics.registry.get_sample_value("argus_ingest_reconnects_total", {"camera": "cam1"})
        assert reconnects is not None
        assert reconnects >= 2
        await w.stop_pod("pod-a")

    states = w.seen.states("cam1")
    assert states[:2] == ["connecting", "online"]
    assert states.count("offline") >= 2
    assert states[-1] == "online"
    offline = [x for x in w.seen.status_of("cam1") if x.state == "offline"]
    assert "closed" in offline[0].error
    after_reboot = [x for x in offline if x.at_ns > rebooted]
    assert any(("refused" in x.error or "5XX" in x.error or "closed" in x.error) for x in after_reboot)
    # While the camera was down the pod kept trying with a growing, jittered back-off, not in a tight loop.
    tries = [x for x in w.seen.status_of("cam1") if x.state == "connecting" and x.at_ns > rebooted]
    assert 1 <= len(tries) <= 8
    sessions = sessions_ok(w, "cam1")
    assert len(sessions) >= 3
    # Each session continues the camera's timeline. simcam, like many cameras, starts a connection with the GOP it
    # has in hand, so a new session may repeat up to a GOP (2 s) of the previous one, with the same capture times.
    starts = [s[0].capture_ns for s in sessions]
    ends = [s[-1].capture_ns for s in sessions]
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    assert all(start > end - 2_000_000_000 for start, end in zip(starts[1:], ends, strict=False))


async def test_stall_then_corrupt_nal_units(nats_url: str, database_url: str) -> None:
    async with simcam({"cam1": CameraDef(sub=None)}) as env, world(nats_url, database_url) as w:
        await w.add_camera("cam1", env.url("cam1"))
        await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of("cam1")) >= 50, what="online")

        stalled = time.time_ns()
        env.faults("cam1").stall_for(4.0)
        await eventually(
            lambda: any(x.state == "offline" and x.at_ns > stalled for x in w.seen.status_of("cam1")),
            what="offline on stall",
        )
        offline = next(x for x in w.seen.status_of("cam1") if x.state == "offline")
        assert "stalled" in offline.error
        assert (offline.at_ns - stalled) / 1e9 >= 1.9
        await eventually(lambda: online_after(w, "cam1", stalled + 4_000_000_000), within_s=20, what="back")

        # Corrupt NAL units are the camera's problem, not a connection's: ingest passes them on and stays online.
        sessions_before = len(w.seen.sessions("cam1"))
        count = len(w.seen.of("cam1"))
        env.faults("cam1").corrupt_nal_rate = 0.2
        await asyncio.sleep(3.0)
        env.faults("cam1").corrupt_nal_rate = 0.0
        await eventually(lambda: len(w.seen.of("cam1")) >= count + 70, what="media through corruption")
        assert len(w.seen.sessions("cam1")) == sessions_before
        await w.stop_pod("pod-a")
    # Corrupt slice headers can make FFmpeg's parser cut a picture in two (two packets, one decode time): ingest
    # passes them on as they came; the recorder repairs or flags such timestamps. The sessions are whole.
    for session in w.seen.sessions("cam1"):
        packets = [p for p in w.seen.of("cam1") if p.session == session]
        assert [p.seq for p in packets] == list(range(len(packets)))
        assert packets[0].keyframe
        assert packets[0].config is not None
        assert all(b.dts >= a.dts for a, b in zip(packets, packets[1:], strict=False))


async def test_resolution_change_gives_a_new_config(nats_url: str, database_url: str) -> None:
    async with simcam({"cam1": CameraDef(sub=None)}) as env, world(nats_url, database_url) as w:
        await w.add_camera("cam1", env.url("cam1"))
        await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of("cam1")) >= 30, what="online")
        env.faults("cam1").resolution = (640, 360)

        def small() -> bool:
            return any(p.config is not None and p.config.width == 640 for p in w.seen.of("cam1"))

        await eventually(small, within_s=20, what="a 640x360 config")
        await eventually(
            lambda: any(x.width == 640 and x.state == "online" for x in w.seen.status_of("cam1")),
            what="status with the new size",
        )
        env.faults("cam1").resolution = None
        count = len(w.seen.of("cam1"))
        await eventually(
            lambda: any(p.config is not None and p.config.width == 1280 for p in w.seen.of("cam1")[count:]),
            within_s=20,
            what="back to 1280x720",
        )
        await w.stop_pod("pod-a")
    packets = w.seen.of("cam1")
    sizes = [(p.config.width, p.config.height) for p in packets if p.config is not None]
    changes = [b for a, b in zip(sizes, sizes[1:], strict=False) if a != b]
    assert (640, 360) in changes
    assert changes[-1] == (1280, 720)
    # A configuration changes only on a keyframe, and every keyframe says which one is in force.
    assert all(p.keyframe for p in packets if p.config is not None)
    for session in sessions_ok(w, "cam1"):
        assert session[0].config is not None
