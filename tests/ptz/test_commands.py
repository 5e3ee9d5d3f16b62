"""PTZ commands over the bus, through a ptz pod, to simcam's ONVIF PTZ: each one moves the simulated head."""

from __future__ import annotations

import asyncio
import time

import pytest

from argus_core.bus import decode
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_simcam.ptz import PtzModel, PtzVector
from tests.ptz.support import FAST, OPERATOR, SLOW, events, eventually, ptz_pod, register, world


def close_to(a: tuple[float, ...], b: tuple[float, ...], eps: float = 1e-3) -> bool:
    return all(abs(x - y) <= eps for x, y in zip(a, b, strict=True))


async def test_each_command_moves_the_simulated_camera(nats_url: str, database_url: str) -> None:
    model = PtzModel(limits=FAST)
    async with world(nats_url, database_url, {"cam-1": model}) as w, ptz_pod(w):
        cam = w.cameras["cam-1"]

        result = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.5, tilt=-0.25, zoom=0.4))
        assert result.ok, result
        assert (result.holder, result.lease_until_ns > time.time_ns()) == ("op-ann", True)
        await eventually(lambda: close_to(cam.position(), (0.5, -0.25, 0.4)))

        result = await w.command("cam-1", m.PtzRelativeMove(pan=-0.2, tilt=0.1, zoom=0.1, speed=1.0))
        assert result.ok, result
        await eventually(lambda: close_to(cam.position(), (0.3, -0.15, 0.5)))

        # Only pan given: tilt and zoom stay where they are.
        result = await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.1))
        assert result.ok, result
        await eventually(lambda: close_to(cam.position(), (-0.1, -0.15, 0.5)))

        status = await w.command("cam-1", m.PtzGetStatus())
        assert status.ok
        assert not status.moving
        assert (status.pan, status.tilt, status.zoom) == pytest.approx((-0.1, -0.15, 0.5), abs=1e-3)
        assert status.holder == "op-ann"

        caps = await w.command("cam-1", m.PtzGetCapabilities())
        assert caps.capabilities is not None
        assert caps.capabilities.max_presets == 64
        assert caps.capabilities.home_supported
        assert caps.capabilities.ranges["pan"] == m.PtzRange(min=-1.0, max=1.0)
        assert caps.capabilities.ranges["zoom"] == m.PtzRange(min=0.0, max=1.0)
        assert caps.capabilities.ranges["timeout_s"] == m.PtzRange(min=0.1, max=300.0)


async def test_continuous_move_and_stop(nats_url: str, database_url: str) -> None:
    model = PtzModel(limits=SLOW)
    async with world(nats_url, database_url, {"cam-1": model}) as w, ptz_pod(w):
        cam = w.cameras["cam-1"]
        result = await w.command("cam-1", m.PtzContinuousMove(pan=1.0, tilt=0.0, zoom=0.5, timeout_s=5.0))
        assert (result.ok, result.moving) == (True, True), result
        await asyncio.sleep(0.3)
        assert cam.moving()
        pan, _, zoom = cam.position()
        assert pan > 0.05
        assert zoom > 0.02
        result = await w.command("cam-1", m.PtzStop())
        assert (result.ok, result.moving) == (True, False), result
        assert not cam.moving()
        stopped = cam.position()
        await asyncio.sleep(0.2)
        assert cam.position() == stopped


async def test_presets_round_trip_and_home(nats_url: str, database_url: str) -> None:
    model = PtzModel(limits=FAST)
    async with world(nats_url, database_url, {"cam-1": model}) as w, ptz_pod(w):
        cam = w.cameras["cam-1"]
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.7, tilt=0.2, zoom=0.3))).ok
        await eventually(lambda: close_to(cam.position(), (0.7, 0.2, 0.3)))
        saved = await w.command("cam-1", m.PtzSetPreset(name="Town Hall"))
        assert saved.ok, saved
        [(token, name)] = saved.presets.items()
        assert name == "Town Hall"
        assert (await w.command("cam-1", m.PtzGetPresets())).presets == {token: "Town Hall"}
        assert model.preset(token).position == pytest.approx(PtzVector(0.7, 0.2, 0.3), abs=1e-3)

        # Overwrite it in place at another position, under a new name.
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.6, tilt=-0.4, zoom=0.0))).ok
        await eventually(lambda: close_to(cam.position(), (-0.6, -0.4, 0.0)))
        renamed = await w.command("cam-1", m.PtzSetPreset(name="Market", preset=token))
        assert renamed.presets == {token: "Market"}
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.0, tilt=0.0, zoom=1.0))).ok
        await eventually(lambda: close_to(cam.position(), (0.0, 0.0, 1.0)))
        assert (await w.command("cam-1", m.PtzGotoPreset(preset=token, speed=1.0))).ok
        await eventually(lambda: close_to(cam.position(), (-0.6, -0.4, 0.0)))

        # Home: set here, go elsewhere, come back.
        assert (await w.command("cam-1", m.PtzSetHome())).ok
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.9, tilt=0.9, zoom=0.9))).ok
        await eventually(lambda: close_to(cam.position(), (0.9, 0.9, 0.9)))
        assert (await w.command("cam-1", m.PtzGotoHome())).ok
        await eventually(lambda: close_to(cam.position(), (-0.6, -0.4, 0.0)))

        removed = await w.command("cam-1", m.PtzRemovePreset(preset=token))
        assert removed.ok
        assert (await w.command("cam-1", m.PtzGetPresets())).presets == {}
        missing = await w.command("cam-1", m.PtzGotoPreset(preset=token))
        assert (missing.ok, missing.error) == (False, "not_found")
        assert token in missing.detail


async def test_out_of_range_values_are_refused_with_the_valid_range(nats_url: str, database_url: str) -> None:
    model = PtzModel(limits=FAST)
    async with world(nats_url, database_url, {"cam-1": model}) as w, ptz_pod(w):
        cases: list[tuple[m.PtzAction, str, float, float]] = [
            (m.PtzAbsoluteMove(pan=1.5), "pan", -1.0, 1.0),
            (m.PtzAbsoluteMove(zoom=-0.1), "zoom", 0.0, 1.0),
            (m.PtzAbsoluteMove(pan=0.1, speed=2.0), "speed", 0.0, 1.0),
            (m.PtzRelativeMove(tilt=-3.0), "tilt", -1.0, 1.0),
            (m.PtzContinuousMove(pan=1.2), "pan", -1.0, 1.0),
            (m.PtzContinuousMove(pan=0.5, timeout_s=60.0), "timeout_s", 0.1, 5.0),
            (m.PtzContinuousMove(pan=0.5, timeout_s=0.01), "timeout_s", 0.1, 5.0),
        ]
        for action, argument, low, high in cases:
            result = await w.command("cam-1", action)
            assert (result.ok, result.error, result.argument) == (False, "out_of_range", argument), result
            assert (result.valid_min, result.valid_max) == (low, high)
            assert f"[{low:g}, {high:g}]" in result.detail
        # Nothing moved, and nobody took control with a refused command.
        assert model.position() == PtzVector(0.0, 0.0, 0.0)
        assert (await w.command("cam-1", m.PtzGetStatus())).holder == ""
        audit = await w.audit()
        assert len([e for e in audit if e.outcome == "failure"]) == len(cases)


async def test_unknown_camera_camera_without_ptz_and_unreachable_camera(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST), "fixed-1": None}) as w, ptz_pod(w):
        unknown = await w.command("cam-9", m.PtzAbsoluteMove(pan=0.1))
        assert (unknown.ok, unknown.error) == (False, "unknown_camera")
        # The register says it has PTZ, but the device offers no PTZ service.
        no_service = await w.command("fixed-1", m.PtzAbsoluteMove(pan=0.1))
        assert (no_service.ok, no_service.error) == (False, "no_ptz"), no_service
        # The register says it has no PTZ.
        await register(w.pool, "dome-0", w.cameras["cam-1"].device_url, has_ptz=False)
        flagged = await w.command("dome-0", m.PtzGetStatus())
        assert (flagged.ok, flagged.error) == (False, "no_ptz")
        assert "register" in flagged.detail
        # Nothing listens there.
        await register(w.pool, "gone-1", "http://127.0.0.1:9/onvif/device_service")
        gone = await w.command("gone-1", m.PtzGetStatus())
        assert (gone.ok, gone.error) == (False, "onvif_unreachable"), gone
        # Wrong credentials in the register.
        await register(w.pool, "locked-1", w.cameras["cam-1"].device_url, password="wrong")
        locked = await w.command("locked-1", m.PtzGetStatus())
        assert (locked.ok, locked.error) == (False, "onvif_auth"), locked


async def test_a_camera_that_does_not_answer_is_a_timeout_and_others_are_not_held_up(
    nats_url: str, database_url: str
) -> None:
    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # never answers
        finally:
            writer.close()

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w:
            await register(w.pool, "mute-1", f"http://127.0.0.1:{port}/onvif/device_service")
            async with ptz_pod(w, onvif_timeout_s=1.0):
                started = time.monotonic()
                mute = asyncio.create_task(w.command("mute-1", m.PtzGetStatus()))
                await asyncio.sleep(0.1)
                other = await w.command("cam-1", m.PtzGetStatus())
                assert other.ok
                assert time.monotonic() - started < 0.9
                result = await mute
                assert (result.ok, result.error) == (False, "onvif_timeout"), result
                assert "1 s" in result.detail
    finally:
        server.close()
        await server.wait_closed()


async def test_a_malformed_command_gets_a_bad_request_answer(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w):
        subject = s.PTZ_COMMAND.format(camera="cam-1")
        reply = await w.bus.nc.request(subject, b'{"camera":"cam-1","action":{"type":"spin"}}', timeout=5)
        decoded = decode(s.PTZ_RESULT, reply.data)
        assert (decoded.ok, decoded.error) == (False, "bad_request")
        wrong = m.PtzCommand(camera="cam-2", actor=OPERATOR, action=m.PtzGetStatus(), priority=60)
        answer = await w.bus.request(s.PTZ_COMMAND, wrong, s.PTZ_RESULT, camera="cam-1")
        assert (answer.ok, answer.error) == (False, "bad_request")


async def test_every_command_is_in_the_audit_stream(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w):
        actions: list[m.PtzAction] = [
            m.PtzAbsoluteMove(pan=0.2),
            m.PtzContinuousMove(pan=0.3, timeout_s=1.0),
            m.PtzStop(),
            m.PtzSetPreset(name="Gate"),
            m.PtzGetPresets(),
            m.PtzGetStatus(),
            m.PtzGotoPreset(preset="nope"),
        ]
        results = [await w.command("cam-1", a) for a in actions]
        audit = await w.audit()
        commands = [e for e in audit if e.actor.subject == "op-ann"]
        assert [e.action for e in commands] == [
            "ptz.absolute",
            "ptz.continuous",
            "ptz.stop",
            "ptz.set_preset",
            "ptz.presets",
            "ptz.status",
            "ptz.goto_preset",
        ]
        assert [e.outcome for e in commands] == ["success"] * 6 + ["failure"]
        for event, result in zip(commands, results, strict=True):
            assert event.camera == "cam-1"
            assert event.service == "ptz"
            assert event.actor == OPERATOR
            assert event.details["priority"] == "60"
            assert event.details["pod"] == "pod-a"
            assert event.details.get("error", "") == result.error
        assert commands[0].details["args"] == '{"type":"absolute","pan":0.2,"tilt":null,"zoom":null,"speed":null}'
        assert commands[-1].target == "nope"
        assert len({e.id for e in audit}) == len(audit)
        assert events(audit, "ptz.set_preset")[0].target == "Gate"


async def test_the_camera_password_never_reaches_the_logs(
    nats_url: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w:
        await register(w.pool, "locked-1", w.cameras["cam-1"].device_url, password="another-Secret-99")
        async with ptz_pod(w):
            assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2))).ok
            assert not (await w.command("locked-1", m.PtzGetStatus())).ok
            assert (await w.command("cam-1", m.PtzGetStatus())).ok
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "cam-1" in text  # the log was captured
    assert "Pa55-w0rd-not-in-logs" not in text
    assert "another-Secret-99" not in text
