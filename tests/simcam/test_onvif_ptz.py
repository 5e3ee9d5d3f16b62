"""PTZ over ONVIF with onvif-zeep-async, the requests shaped as Home Assistant shapes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zeep.exceptions

from argus_simcam.onvif import make_onvif_app
from argus_simcam.ptz import PtzLimits, PtzModel
from tests.simcam.onvif_support import make_camera, no_leaks, onvif_client, serve

# Slow enough that a move spans several requests, fast enough for a short test.
LIMITS = PtzLimits(pan_speed=1.0, tilt_speed=0.5, zoom_speed=0.5)
EPS = 0.02  # speed * a little scheduling slack


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    async with no_leaks():
        yield


async def status(ptz: Any) -> tuple[float, float, float, str, str]:
    result = await ptz.GetStatus({"ProfileToken": "main"})
    position, move = result.Position, result.MoveStatus
    return position.PanTilt.x, position.PanTilt.y, position.Zoom.x, move.PanTilt, move.Zoom


async def wait_idle(ptz: Any, limit: float = 10.0) -> None:
    """Poll GetStatus, as a client does, until the head stops."""
    for _ in range(int(limit / 0.05)):
        if "MOVING" not in (await status(ptz))[3:]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the head never stopped")


def subcodes(fault: zeep.exceptions.Fault) -> list[str]:
    return [q.localname for q in fault.subcodes]


async def test_ptz_node_and_configuration() -> None:
    camera = make_camera(ptz=PtzModel(limits=LIMITS))
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()
        nodes = await ptz.GetNodes()
        assert [n.token for n in nodes] == ["PTZNode0"]
        assert nodes[0].HomeSupported is True
        assert nodes[0].MaximumNumberOfPresets == 64
        spaces = nodes[0].SupportedPTZSpaces
        assert spaces.ContinuousPanTiltVelocitySpace[0].XRange.Min == -1.0
        assert spaces.AbsoluteZoomPositionSpace[0].XRange.Max == 1.0
        assert (await ptz.GetNode({"NodeToken": "PTZNode0"})).token == "PTZNode0"
        configurations = await ptz.GetConfigurations()
        assert [c.token for c in configurations] == ["PTZConfig0"]
        configuration = await ptz.GetConfiguration({"PTZConfigurationToken": "PTZConfig0"})
        assert configuration.NodeToken == "PTZNode0"
        assert configuration.DefaultPTZTimeout.total_seconds() == 10
        options = await ptz.GetConfigurationOptions({"ConfigurationToken": "PTZConfig0"})
        assert options.PTZTimeout.Max.total_seconds() == 300
        capabilities = await ptz.GetServiceCapabilities()
        assert capabilities.EFlip is False
        with pytest.raises(zeep.exceptions.Fault) as info:
            await ptz.GetNode({"NodeToken": "other"})
        assert subcodes(info.value) == ["InvalidArgVal", "NoEntity"]


async def test_continuous_move_and_stop() -> None:
    camera = make_camera(ptz=PtzModel(limits=LIMITS))
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()
        assert await status(ptz) == (0.0, 0.0, 0.0, "IDLE", "IDLE")

        request = ptz.create_type("ContinuousMove")
        request.ProfileToken = "main"
        request.Velocity = {"PanTilt": {"x": 0.5, "y": -1.0}, "Zoom": {"x": 1.0}}
        sent = time.monotonic()
        await ptz.ContinuousMove(request)
        answered = time.monotonic()
        await asyncio.sleep(0.3)
        asked = time.monotonic()
        pan, tilt, zoom, pan_tilt_move, zoom_move = await status(ptz)
        got = time.monotonic()
        assert (pan_tilt_move, zoom_move) == ("MOVING", "MOVING")
        # The position follows the speed limits: between what the earliest and latest instants allow.
        assert 0.5 * (asked - answered) - EPS <= pan <= 0.5 * (got - sent) + EPS
        assert -0.5 * (got - sent) - EPS <= tilt <= -0.5 * (asked - answered) + EPS
        assert 0.5 * (asked - answered) - EPS <= zoom <= 0.5 * (got - sent) + EPS

        stop = ptz.create_type("Stop")
        stop.ProfileToken = "main"
        stop.PanTilt = True
        stop.Zoom = False
        await ptz.Stop(stop)
        pan_stopped, _, _, pan_tilt_move, zoom_move = await status(ptz)
        assert (pan_tilt_move, zoom_move) == ("IDLE", "MOVING")
        await ptz.Stop({"ProfileToken": "main"})  # no PanTilt/Zoom: stops everything
        first = await status(ptz)
        await asyncio.sleep(0.1)
        assert await status(ptz) == first
        assert first[0] == pan_stopped
        assert first[3:] == ("IDLE", "IDLE")


async def test_continuous_move_times_out() -> None:
    camera = make_camera(ptz=PtzModel(limits=LIMITS))
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()
        await ptz.ContinuousMove(
            {"ProfileToken": "main", "Velocity": {"PanTilt": {"x": -1.0, "y": 0.0}}, "Timeout": "PT0.2S"}
        )
        await asyncio.sleep(0.5)
        pan, tilt, zoom, pan_tilt_move, zoom_move = await status(ptz)
        assert pan == pytest.approx(-0.2, abs=1e-9)
        assert (tilt, zoom, pan_tilt_move, zoom_move) == (0.0, 0.0, "IDLE", "IDLE")


async def test_absolute_and_relative_moves_take_time() -> None:
    camera = make_camera(ptz=PtzModel(limits=LIMITS))
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()

        request = ptz.create_type("AbsoluteMove")
        request.ProfileToken = "main"
        request.Position = {"PanTilt": {"x": 0.6, "y": 0.2}, "Zoom": {"x": 0.1}}
        await ptz.AbsoluteMove(request)
        pan, _, _, pan_tilt_move, _ = await status(ptz)
        assert pan_tilt_move == "MOVING"
        assert 0.0 <= pan < 0.6
        await asyncio.sleep(0.8)
        arrived = await status(ptz)
        assert arrived[:3] == pytest.approx((0.6, 0.2, 0.1))
        assert arrived[3:] == ("IDLE", "IDLE")

        request = ptz.create_type("RelativeMove")
        request.ProfileToken = "main"
        request.Translation = {"PanTilt": {"x": -0.4, "y": 0.0}, "Zoom": {"x": 0.0}}
        request.Speed = {"PanTilt": {"x": 0.5, "y": 0.5}, "Zoom": {"x": 0.5}}
        sent = time.monotonic()
        await ptz.RelativeMove(request)
        await wait_idle(ptz)
        took = time.monotonic() - sent
        assert 0.75 <= took < 2.0  # 0.4 at half of 1.0/s
        assert (await status(ptz))[:3] == pytest.approx((0.2, 0.2, 0.1))


async def test_out_of_range_values_are_invalid_arguments() -> None:
    camera = make_camera(ptz=PtzModel(limits=LIMITS))
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()
        cases: list[tuple[str, dict[str, Any], list[str]]] = [
            ("AbsoluteMove", {"Position": {"PanTilt": {"x": 1.5, "y": 0.0}}}, ["InvalidArgVal", "InvalidPosition"]),
            ("AbsoluteMove", {"Position": {"Zoom": {"x": -0.5}}}, ["InvalidArgVal", "InvalidPosition"]),
            (
                "AbsoluteMove",
                {"Position": {"Zoom": {"x": 0.5}}, "Speed": {"Zoom": {"x": 2.0}}},
                ["InvalidArgVal", "InvalidSpeed"],
            ),
            (
                "RelativeMove",
                {"Translation": {"PanTilt": {"x": 0.0, "y": -3.0}}},
                ["InvalidArgVal", "InvalidTranslation"],
            ),
            ("ContinuousMove", {"Velocity": {"PanTilt": {"x": 2.0, "y": 0.0}}}, ["InvalidArgVal", "InvalidVelocity"]),
            ("ContinuousMove", {"Velocity": {"Zoom": {"x": 0.5}}, "Timeout": "PT1H"}, ["InvalidArgVal"]),
            (
                "AbsoluteMove",
                {"Position": {"PanTilt": {"x": 0.1, "y": 0.0, "space": "http://example.com/degrees"}}},
                ["InvalidArgVal", "SpaceNotSupported"],
            ),
            ("GotoPreset", {"PresetToken": "42"}, ["InvalidArgVal", "NoToken"]),
            ("RemovePreset", {"PresetToken": "42"}, ["InvalidArgVal", "NoToken"]),
        ]
        for operation, arguments, expected in cases:
            with pytest.raises(zeep.exceptions.Fault) as info:
                await getattr(ptz, operation)({"ProfileToken": "main", **arguments})
            assert info.value.code == "env:Sender", operation
            assert subcodes(info.value) == expected, (operation, arguments)
        with pytest.raises(zeep.exceptions.Fault) as info:
            await ptz.GetStatus({"ProfileToken": "nope"})
        assert subcodes(info.value) == ["InvalidArgVal", "NoProfile"]
        assert await status(ptz) == (0.0, 0.0, 0.0, "IDLE", "IDLE")


async def test_presets_and_home_round_trip() -> None:
    camera = make_camera(ptz=PtzModel(limits=LIMITS))
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()
        assert await ptz.GetPresets({"ProfileToken": "main"}) == []

        async def move_to(pan: float, tilt: float, zoom: float) -> None:
            position = {"PanTilt": {"x": pan, "y": tilt}, "Zoom": {"x": zoom}}
            await ptz.AbsoluteMove({"ProfileToken": "main", "Position": position})
            await wait_idle(ptz)

        await move_to(0.5, -0.25, 0.25)
        door = await ptz.SetPreset({"ProfileToken": "main", "PresetName": "door"})
        await move_to(-0.5, 0.0, 0.0)
        gate = await ptz.SetPreset({"ProfileToken": "main", "PresetName": "gate"})
        presets = await ptz.GetPresets({"ProfileToken": "main"})
        assert [(p.token, p.Name) for p in presets] == [(door, "door"), (gate, "gate")]
        assert (presets[0].PTZPosition.PanTilt.x, presets[0].PTZPosition.Zoom.x) == (0.5, 0.25)

        with pytest.raises(zeep.exceptions.Fault) as info:
            await ptz.SetPreset({"ProfileToken": "main", "PresetName": "door"})
        assert subcodes(info.value) == ["InvalidArgVal", "PresetExist"]

        request = ptz.create_type("GotoPreset")
        request.ProfileToken = "main"
        request.PresetToken = door
        request.Speed = {"PanTilt": {"x": 1.0, "y": 1.0}, "Zoom": {"x": 1.0}}
        await ptz.GotoPreset(request)
        assert (await status(ptz))[3] == "MOVING"
        await asyncio.sleep(1.2)
        assert await status(ptz) == (0.5, -0.25, 0.25, "IDLE", "IDLE")

        await ptz.RemovePreset({"ProfileToken": "main", "PresetToken": door})
        assert [p.token for p in await ptz.GetPresets({"ProfileToken": "main"})] == [gate]

        await ptz.SetHomePosition({"ProfileToken": "main"})
        await move_to(0.0, 0.0, 0.5)
        await ptz.GotoHomePosition({"ProfileToken": "main"})
        assert (await status(ptz))[3] == "MOVING"
        await asyncio.sleep(1.2)
        assert await status(ptz) == (0.5, -0.25, 0.25, "IDLE", "IDLE")

        # Home Assistant reads the preset tokens of each profile; all profiles share the one head.
        media = await cam.create_media_service()
        for profile in await media.GetProfiles():
            assert [p.token for p in await ptz.GetPresets(profile.token)] == [gate]
