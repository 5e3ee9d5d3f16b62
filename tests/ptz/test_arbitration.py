"""Control leases: priority preemption, refusal with holder and expiry, renewal, idle release, dead-caller stop."""

from __future__ import annotations

import asyncio
import time

import pytest

from argus_core.bus import messages as m
from argus_simcam.ptz import PtzModel
from tests.ptz.support import (
    FAST,
    OPERATOR,
    OPERATOR_2,
    PARTNER,
    SLOW,
    SUPERVISOR,
    events,
    eventually,
    ptz_pod,
    world,
)

EMERGENCY = m.Actor(subject="duty-inspector", roles=("emergency",), client="10.0.0.99")


class IgnoresTimeout(PtzModel):
    """A head whose firmware ignores ContinuousMove's Timeout: only a Stop stops it."""

    def continuous_move(
        self,
        pan_tilt: tuple[float, float] | None = None,
        zoom: float | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        super().continuous_move(pan_tilt, zoom, timeout=None)


async def test_higher_priority_takes_over_at_once_and_lower_or_equal_is_refused(
    nats_url: str, database_url: str
) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w, lease_idle_s=30):
        cam = w.cameras["cam-1"]
        first = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.5), OPERATOR)
        assert first.ok
        assert first.holder == "op-ann"

        for actor in (PARTNER, OPERATOR_2):  # lower, then equal priority
            refused = await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.5), actor)
            assert (refused.ok, refused.error, refused.holder) == (False, "refused", "op-ann"), refused
            assert refused.lease_until_ns == first.lease_until_ns
            assert "op-ann (operator)" in refused.detail
            assert "until" in refused.detail
        await eventually(lambda: abs(cam.position()[0] - 0.5) < 1e-3)

        taken = await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.5), SUPERVISOR)
        assert taken.ok
        assert taken.holder == "sup-cat"
        assert "from op-ann" in taken.detail
        await eventually(lambda: abs(cam.position()[0] + 0.5) < 1e-3)

        back = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.9), OPERATOR)
        assert (back.ok, back.error, back.holder) == (False, "refused", "sup-cat")
        assert back.lease_until_ns == taken.lease_until_ns
        stop = await w.command("cam-1", m.PtzStop(), OPERATOR)  # a stop is control too
        assert (stop.ok, stop.holder) == (False, "sup-cat")

        override = await w.command("cam-1", m.PtzGotoHome(), EMERGENCY, priority=100)
        assert override.ok
        assert override.holder == "duty-inspector"
        await eventually(lambda: abs(cam.position()[0]) < 1e-3)

        # Reads need no control.
        status = await w.command("cam-1", m.PtzGetStatus(), PARTNER)
        assert status.ok
        assert status.holder == "duty-inspector"

        audit = await w.audit()
        denied = [e for e in audit if e.outcome == "denied"]
        assert [(e.actor.subject, e.details["holder"]) for e in denied] == [
            ("pc-1234", "op-ann"),
            ("op-bob", "op-ann"),
            ("op-ann", "sup-cat"),
            ("op-ann", "sup-cat"),
        ]


async def test_concurrent_callers_of_equal_priority_one_wins(nats_url: str, database_url: str) -> None:
    """Ten operators at once, through two pods: exactly one gets the camera, the others are told who has it."""
    async with (
        world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w,
        ptz_pod(w, "pod-a", lease_idle_s=30),
        ptz_pod(w, "pod-b", lease_idle_s=30),
    ):
        for round_ in range(3):
            camera_actors = [m.Actor(subject=f"op-{round_}-{i}", roles=("operator",)) for i in range(10)]
            results = await asyncio.gather(
                *(w.command("cam-1", m.PtzAbsoluteMove(pan=i / 10), a) for i, a in enumerate(camera_actors))
            )
            winners = [r for r in results if r.ok]
            assert len(winners) == 1, results
            winner = winners[0].holder
            assert all(r.error == "refused" and r.holder == winner for r in results if not r.ok)
            # A supervisor clears the round for the next one.
            sup = m.Actor(subject=f"sup-{round_}", roles=("supervisor",))
            assert (await w.command("cam-1", m.PtzRelease(), m.Actor(subject=winner, roles=("operator",)))).ok
            grabbed = await asyncio.gather(
                w.command("cam-1", m.PtzStop(), sup, priority=80),
                w.command("cam-1", m.PtzStop(), m.Actor(subject=f"sup-x{round_}", roles=("supervisor",)), 80),
            )
            assert sorted(r.ok for r in grabbed) == [False, True]
            holder = next(r.holder for r in grabbed if r.ok)
            assert (await w.command("cam-1", m.PtzRelease(), m.Actor(subject=holder, roles=("supervisor",)))).ok
        pods = {e.details["pod"] for e in await w.audit()}
        assert pods == {"pod-a", "pod-b"}  # both pods answered commands


async def test_every_command_renews_and_idle_releases(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w, lease_idle_s=1.0):
        first = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.1), OPERATOR)
        await asyncio.sleep(0.6)
        second = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2), OPERATOR)
        assert second.lease_until_ns - first.lease_until_ns >= 500_000_000
        await asyncio.sleep(0.6)  # 1.2 s after the first command, 0.6 s after the second: still held
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.3), OPERATOR_2)).error == "refused"
        started = time.monotonic()
        await eventually(lambda: time.time_ns() > second.lease_until_ns, within_s=2)

        async def released() -> bool:
            return (await w.command("cam-1", m.PtzGetStatus(), PARTNER)).holder == ""

        await eventually(released, within_s=2)
        assert time.monotonic() - started < 1.0
        taken = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.3), OPERATOR_2)
        assert taken.ok
        assert taken.holder == "op-bob"
        audit = await w.audit()
        release = events(audit, "ptz.control.release")
        assert [(e.actor.subject, e.reason) for e in release] == [("op-ann", "idle")]


async def test_release_hands_the_camera_over_at_once(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w, lease_idle_s=30):
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.1), OPERATOR)).ok
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2), OPERATOR_2)).error == "refused"
        not_theirs = await w.command("cam-1", m.PtzRelease(), OPERATOR_2)
        assert not_theirs.ok
        assert "not held" in not_theirs.detail
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2), OPERATOR_2)).error == "refused"
        assert (await w.command("cam-1", m.PtzRelease(), OPERATOR)).detail == "control released"
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2), OPERATOR_2)).ok


async def test_a_failed_command_keeps_the_lease_consistent(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w, lease_idle_s=30):
        failed = await w.command("cam-1", m.PtzGotoPreset(preset="42"), OPERATOR)
        assert (failed.ok, failed.error, failed.holder) == (False, "not_found", "op-ann")
        assert failed.lease_until_ns > time.time_ns()
        refused = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.2), OPERATOR_2)
        assert (refused.error, refused.holder, refused.lease_until_ns) == ("refused", "op-ann", failed.lease_until_ns)


@pytest.mark.parametrize("model_type", [PtzModel, IgnoresTimeout])
async def test_a_continuous_move_stops_when_its_caller_goes_silent(
    nats_url: str, database_url: str, model_type: type[PtzModel]
) -> None:
    model = model_type(limits=SLOW)
    async with world(nats_url, database_url, {"cam-1": model}) as w, ptz_pod(w, lease_idle_s=30):
        cam = w.cameras["cam-1"]
        assert (await w.command("cam-1", m.PtzGetStatus())).ok  # connected and discovered: no first-use delay
        # A browser holding the joystick: a keep-alive every 0.2 s, each asking for 0.8 s more.
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            result = await w.command("cam-1", m.PtzContinuousMove(pan=0.4, timeout_s=0.8), OPERATOR)
            assert result.ok
            assert result.moving
            await asyncio.sleep(0.2)
            assert cam.moving()  # never lapsed while keep-alives came
        pan_at_silence = cam.position()[0]
        silent = time.monotonic()
        assert pan_at_silence > 0.2  # 0.4 x 0.5/s for ~1.5 s
        # The browser died. The camera stops within the 0.8 s window (plus the keeper's tick).
        await eventually(lambda: not cam.moving(), within_s=3)
        assert time.monotonic() - silent < 1.3
        stopped_at = cam.position()[0]
        await asyncio.sleep(0.5)
        assert cam.position()[0] == stopped_at
        assert stopped_at - pan_at_silence < 0.2 * 1.3 + 0.01
        audit = await w.audit()
        watchdog = events(audit, "ptz.stop")
        assert [(e.reason, e.details["holder"], e.outcome) for e in watchdog] == [
            ("keep-alive lapsed", "op-ann", "success")
        ]
        # The operator still holds the camera: only the motion ended.
        assert (await w.command("cam-1", m.PtzGetStatus())).holder == "op-ann"


async def test_a_preempted_continuous_move_still_stops(nats_url: str, database_url: str) -> None:
    """A supervisor who takes control without moving (saving a preset) does not inherit a spinning camera."""
    model = IgnoresTimeout(limits=SLOW)
    async with world(nats_url, database_url, {"cam-1": model}) as w, ptz_pod(w, lease_idle_s=30):
        cam = w.cameras["cam-1"]
        assert (await w.command("cam-1", m.PtzContinuousMove(pan=0.4, timeout_s=0.6), OPERATOR)).ok
        saved = await w.command("cam-1", m.PtzSetPreset(name="while moving"), SUPERVISOR)
        assert saved.ok
        assert saved.holder == "sup-cat"
        assert saved.moving  # the operator's move goes on until its keep-alive window ends
        assert cam.moving()
        await eventually(lambda: not cam.moving(), within_s=2)
        watchdog = events(await w.audit(), "ptz.stop")
        assert [e.reason for e in watchdog] == ["keep-alive lapsed"]
