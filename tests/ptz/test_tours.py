"""Tours visit presets in order with their dwell times, yield to manual control and resume; park after idle."""

from __future__ import annotations

import asyncio
import time

from argus_core.bus import messages as m
from argus_simcam.ptz import PtzModel
from tests.ptz.support import FAST, OPERATOR, SUPERVISOR, SimPtz, World, events, eventually, ptz_pod, world

POSITIONS = {"A": (-0.8, 0.2, 0.0), "B": (0.0, -0.5, 0.5), "C": (0.8, 0.4, 1.0)}
EPS = 2e-3


async def make_presets(w: World, camera: str) -> dict[str, str]:
    """Presets A, B, C at `POSITIONS`; returns name -> token. Releases control afterwards."""
    cam = w.cameras[camera]
    tokens: dict[str, str] = {}
    for name, (pan, tilt, zoom) in POSITIONS.items():
        assert (await w.command(camera, m.PtzAbsoluteMove(pan=pan, tilt=tilt, zoom=zoom), SUPERVISOR, 80)).ok
        await eventually(lambda p=(pan, tilt, zoom): near(cam.position(), p))
        saved = await w.command(camera, m.PtzSetPreset(name=name), SUPERVISOR, 80)
        tokens[name] = next(iter(saved.presets))
    assert (await w.command(camera, m.PtzRelease(), SUPERVISOR, 80)).ok
    return tokens


def near(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) <= EPS for x, y in zip(a, b, strict=True))


def where(cam: SimPtz) -> str:
    """Which preset the head rests at ("" while moving or elsewhere)."""
    if cam.moving():
        return ""
    here = cam.position()
    return next((name for name, p in POSITIONS.items() if near(here, p)), "")


async def record(cam: SimPtz, seconds: float) -> list[tuple[float, str]]:
    """(time, where) every 10 ms."""
    samples: list[tuple[float, str]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append((time.monotonic(), where(cam)))
        await asyncio.sleep(0.01)
    return samples


def visits(samples: list[tuple[float, str]]) -> list[tuple[str, float, float]]:
    """Runs of the same resting place: (preset, start, end), moves and other places left out."""
    runs: list[tuple[str, float, float]] = []
    for t, name in samples:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1], t)
        else:
            runs.append((name, t, t))
    return [r for r in runs if r[0]]


async def test_a_tour_visits_its_presets_in_order_with_their_dwell_times(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w):
        tokens = await make_presets(w, "cam-1")
        steps = (
            m.PtzTourStep(preset=tokens["A"], dwell_s=0.6),
            m.PtzTourStep(preset=tokens["B"], dwell_s=1.0, speed=0.5),
            m.PtzTourStep(preset=tokens["C"], dwell_s=0.4),
        )
        saved = await w.command("cam-1", m.PtzSaveTour(name="night-patrol", steps=steps), SUPERVISOR, 80)
        assert saved.ok, saved
        listed = await w.command("cam-1", m.PtzGetTours())
        assert listed.tours == (m.PtzTour(name="night-patrol", steps=steps, active=False),)
        started = await w.command("cam-1", m.PtzStartTour(name="night-patrol"), SUPERVISOR, 80)
        assert started.ok
        assert started.active_tour == "night-patrol"

        samples = await record(w.cameras["cam-1"], 5.0)
        runs = visits(samples)
        names = [r[0] for r in runs]
        assert names[:5] in (list("ABCAB"), list("BCABC"), list("CABCA")), names
        dwell = {"A": 0.6, "B": 1.0, "C": 0.4}
        for name, begin, end in runs[1:-1]:  # the first and last may be cut by the recording
            assert abs((end - begin) - dwell[name]) < 0.2, (name, end - begin)

        status = await w.command("cam-1", m.PtzGetStatus())
        assert status.holder == "tour:night-patrol"
        audit = await w.audit()
        steps_done = events(audit, "ptz.tour.step")
        assert [e.details["step"] for e in steps_done[:4]] == ["0", "1", "2", "0"]
        assert all(e.actor.subject == "tour:night-patrol" and e.outcome == "success" for e in steps_done)
        assert [e.details["preset"] for e in steps_done[:3]] == [tokens["A"], tokens["B"], tokens["C"]]

        stopped = await w.command("cam-1", m.PtzStopTour(), SUPERVISOR, 80)
        assert stopped.ok
        assert stopped.detail == "tour night-patrol stopped"

        async def released() -> bool:
            return (await w.command("cam-1", m.PtzGetStatus())).holder == ""

        await eventually(released, within_s=3)
        count = len(events(await w.audit(), "ptz.tour.step"))
        await asyncio.sleep(1.5)
        assert len(events(await w.audit(), "ptz.tour.step")) == count  # no step after the stop


async def test_an_operator_interrupts_a_tour_and_it_resumes_after_the_idle_time(
    nats_url: str, database_url: str
) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w, lease_idle_s=1.0):
        cam = w.cameras["cam-1"]
        tokens = await make_presets(w, "cam-1")
        steps = tuple(m.PtzTourStep(preset=tokens[n], dwell_s=0.5) for n in "ABC")
        assert (await w.command("cam-1", m.PtzSaveTour(name="loop", steps=steps), SUPERVISOR, 80)).ok
        assert (await w.command("cam-1", m.PtzStartTour(name="loop"), SUPERVISOR, 80)).ok
        await eventually(lambda: where(cam) == "B", within_s=5)

        # An operator grabs the camera in the middle of the dwell at B.
        grabbed = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.5, tilt=0.5, zoom=0.2), OPERATOR)
        assert grabbed.ok
        assert "from tour:loop" in grabbed.detail
        grabbed_at = time.monotonic()
        await eventually(lambda: near(cam.position(), (0.5, 0.5, 0.2)))
        # Through the operator's idle time the tour leaves the camera alone.
        samples = await record(cam, 0.8)
        assert all(name == "" for _, name in samples)
        assert near(cam.position(), (0.5, 0.5, 0.2))
        # Then it resumes where it was interrupted: B, then C.
        await eventually(lambda: where(cam) == "B", within_s=3)
        resumed_after = time.monotonic() - grabbed_at
        assert 1.0 <= resumed_after < 1.8, resumed_after
        await eventually(lambda: where(cam) == "C", within_s=3)

        audit = await w.audit()
        sequence = [
            e.action
            for e in audit
            if e.action in ("ptz.tour.pause", "ptz.tour.resume", "ptz.control.release", "ptz.absolute")
            and e.actor.subject in ("op-ann", "tour:loop")
        ]
        # The command and the pause it caused are audited by different tasks: either may be stored first.
        assert sorted(sequence[:2]) == ["ptz.absolute", "ptz.tour.pause"], sequence
        assert sequence[2:4] == ["ptz.control.release", "ptz.tour.resume"], sequence
        pause = events(audit, "ptz.tour.pause")[0]
        assert pause.details["by"] == "op-ann"
        step_presets = [e.details["preset"] for e in events(audit, "ptz.tour.step")]
        i = step_presets.index(tokens["B"])
        assert step_presets[i : i + 3] == [tokens["B"], tokens["B"], tokens["C"]]  # B again after the pause


async def test_park_after_idle(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w, lease_idle_s=0.5):
        cam = w.cameras["cam-1"]
        tokens = await make_presets(w, "cam-1")
        parked = await w.command("cam-1", m.PtzSetPark(idle_s=1.5, preset=tokens["A"]), SUPERVISOR, 80)
        assert parked.ok
        assert parked.park == m.PtzPark(enabled=True, idle_s=1.5, preset=tokens["A"])
        await eventually(lambda: where(cam) == "A", within_s=5)  # the supervisor's commands were long ago

        for pan in (0.1, 0.2, 0.3):  # an operator works for a while
            assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=pan, tilt=0.0, zoom=0.0), OPERATOR)).ok
            await asyncio.sleep(0.3)
        last = time.monotonic()
        await eventually(lambda: near(cam.position(), (0.3, 0.0, 0.0)))
        await eventually(lambda: where(cam) == "A", within_s=4)
        assert 1.4 <= time.monotonic() - last < 2.2
        count = len(events(await w.audit(), "ptz.park"))
        await asyncio.sleep(2.0)
        assert len(events(await w.audit(), "ptz.park")) == count  # parks once, not again and again

        # Home instead of a preset.
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.0, tilt=0.0, zoom=0.0), SUPERVISOR, 80)).ok
        await eventually(lambda: near(cam.position(), (0.0, 0.0, 0.0)))
        assert (await w.command("cam-1", m.PtzSetHome(), SUPERVISOR, 80)).ok
        assert (await w.command("cam-1", m.PtzSetPark(idle_s=0.5), SUPERVISOR, 80)).ok
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.6), SUPERVISOR, 80)).ok
        await eventually(lambda: near(cam.position(), (0.6, 0.0, 0.0)))
        await eventually(lambda: near(cam.position(), (0.0, 0.0, 0.0)), within_s=4)
        audit = await w.audit()
        parks = events(audit, "ptz.park")
        assert [(e.target, e.outcome, e.reason) for e in parks][-1] == ("home", "success", "idle")
        assert parks[0].target == tokens["A"]
        assert parks[0].actor.subject == "park"

        # Parking off: nothing moves it back.
        assert (await w.command("cam-1", m.PtzSetPark(enabled=False), SUPERVISOR, 80)).ok
        assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.6), SUPERVISOR, 80)).ok
        await asyncio.sleep(2.0)
        assert near(cam.position(), (-0.6, 0.0, 0.0))


async def test_tour_definitions_are_checked(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w, ptz_pod(w):
        tokens = await make_presets(w, "cam-1")
        bad = await w.command("cam-1", m.PtzSaveTour(name="t", steps=(m.PtzTourStep(preset="77"),)), SUPERVISOR, 80)
        assert (bad.ok, bad.error) == (False, "not_found")
        assert "77" in bad.detail
        fast = m.PtzSaveTour(name="t", steps=(m.PtzTourStep(preset=tokens["A"], speed=3.0),))
        too_fast = await w.command("cam-1", fast, SUPERVISOR, 80)
        assert (too_fast.error, too_fast.argument, too_fast.valid_max) == ("out_of_range", "speed", 1.0)
        assert (await w.command("cam-1", m.PtzStartTour(name="none"), SUPERVISOR, 80)).error == "not_found"
        assert (await w.command("cam-1", m.PtzDeleteTour(name="none"), SUPERVISOR, 80)).error == "not_found"
        park = await w.command("cam-1", m.PtzSetPark(idle_s=10, preset="77"), SUPERVISOR, 80)
        assert park.error == "not_found"
        assert (await w.command("cam-1", m.PtzGetTours())).tours == ()
