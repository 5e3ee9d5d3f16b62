"""The ONVIF side: discovery behind a path prefix, a rebooting camera, a camera that moved, URLs without secrets."""

from __future__ import annotations

import time

import pytest
from aiohttp import web

from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_ptz.errors import OnvifUnreachable
from argus_ptz.onvif_client import CameraRecord, OnvifPtz, redact_url
from argus_simcam.onvif import FaultSwitches, make_onvif_app
from argus_simcam.ptz import PtzModel, PtzVector
from tests.ptz.support import FAST, PASSWORD, USER, eventually, onvif_camera, ptz_pod, register, serve, world


def test_urls_lose_their_credentials() -> None:
    assert redact_url("http://admin:secret@10.1.2.3:8080/onvif/device_service") == (
        "http://10.1.2.3:8080/onvif/device_service"
    )
    assert redact_url("http://[fe80::1]/onvif") == "http://[fe80::1]/onvif"
    assert "secret" not in repr(CameraRecord(id="c", onvif_url="http://h/", username="u", password="secret"))


async def test_a_camera_behind_a_path_prefix(nats_url: str, database_url: str) -> None:
    """simcam's fleet (and gateways) serve a camera's device service under a prefix, not /onvif/device_service."""
    model = PtzModel(limits=FAST)
    root = web.Application()
    root.add_subapp("/cam-7", make_onvif_app(onvif_camera("cam-7", model)))
    async with world(nats_url, database_url, {}) as w, serve(root) as port:
        await register(w.pool, "cam-7", f"http://127.0.0.1:{port}/cam-7/onvif/device_service")
        async with ptz_pod(w):
            assert (await w.command("cam-7", m.PtzAbsoluteMove(pan=-0.4, tilt=0.3, zoom=0.6))).ok
            await eventually(lambda: model.position() == PtzVector(-0.4, 0.3, 0.6))


async def test_a_rebooting_camera_is_unreachable_then_back(nats_url: str, database_url: str) -> None:
    model = PtzModel(limits=FAST)
    faults = FaultSwitches()
    camera = onvif_camera("cam-1", model, faults=faults)
    async with world(nats_url, database_url, {}) as w, serve(make_onvif_app(camera)) as port:
        await register(w.pool, "cam-1", f"http://127.0.0.1:{port}/onvif/device_service")
        async with ptz_pod(w):
            assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2))).ok
            faults.rebooting = True
            down = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.4))
            assert (down.ok, down.error) == (False, "onvif_unreachable")
            assert "HTTP 503" in down.detail
            assert down.holder == "op-ann"  # still in control: the camera failed, not the lease
            faults.rebooting = False
            assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.4))).ok
            await eventually(lambda: abs(model.position().pan - 0.4) < 1e-3)


async def test_a_camera_that_moved_is_found_again_after_a_register_change(nats_url: str, database_url: str) -> None:
    old, new = PtzModel(limits=FAST), PtzModel(limits=FAST)
    async with (
        world(nats_url, database_url, {}) as w,
        serve(make_onvif_app(onvif_camera("cam-1", old))) as old_port,
        serve(make_onvif_app(onvif_camera("cam-1", new))) as new_port,
    ):
        await register(w.pool, "cam-1", f"http://127.0.0.1:{old_port}/onvif/device_service")
        async with ptz_pod(w):
            assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.5))).ok
            await eventually(lambda: abs(old.position().pan - 0.5) < 1e-3)
            await register(w.pool, "cam-1", f"http://127.0.0.1:{new_port}/onvif/device_service")
            await w.bus.publish(
                s.CAMERA_CHANGED, m.CameraChanged(camera="cam-1", change="upsert", at_ns=time.time_ns()), camera="cam-1"
            )

            async def moved_new() -> bool:
                await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.5))
                return abs(new.position().pan + 0.5) < 1e-3

            await eventually(moved_new)
            assert abs(old.position().pan - 0.5) < 1e-3


async def test_the_client_reports_a_closed_port_and_closes_cleanly() -> None:
    client = OnvifPtz(
        CameraRecord(id="cam-x", onvif_url="http://127.0.0.1:9/onvif/device_service", username=USER, password=PASSWORD),
        timeout_s=2,
    )
    try:
        with pytest.raises(OnvifUnreachable) as info:
            await client.connect()
        assert "cam-x" in str(info.value)
        assert PASSWORD not in str(info.value)
    finally:
        await client.close()
        await client.close()  # twice is fine
