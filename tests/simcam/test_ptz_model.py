"""The PTZ motion model, driven by a hand-held clock."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from argus_simcam.ptz import (
    InvalidPtzArgument,
    PresetNameInUseError,
    PresetNotFoundError,
    PtzArg,
    PtzLimits,
    PtzModel,
    PtzVector,
    TooManyPresetsError,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


LIMITS = PtzLimits(pan_speed=1.0, tilt_speed=0.5, zoom_speed=0.25, max_presets=3)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def head(clock: Clock) -> PtzModel:
    return PtzModel(limits=LIMITS, now=clock)


def approx(v: PtzVector, pan: float, tilt: float, zoom: float) -> None:
    assert v == pytest.approx(PtzVector(pan, tilt, zoom), abs=1e-9)


def test_starts_idle_at_the_centre(head: PtzModel) -> None:
    status = head.status()
    approx(status.position, 0.0, 0.0, 0.0)
    assert not status.moving
    assert head.view() == (0.0, 0.0, 0.0)


def test_absolute_move_takes_time_at_the_speed_limit(head: PtzModel, clock: Clock) -> None:
    head.absolute_move((0.8, -0.5), 1.0)
    clock.advance(0.4)
    status = head.status()
    approx(status.position, 0.4, -0.2, 0.1)
    assert status.pan_tilt_moving
    assert status.zoom_moving
    clock.advance(0.4)  # pan arrives at 0.8 s; tilt (0.5/s) needs 1 s, zoom (0.25/s) 4 s
    approx(head.position(), 0.8, -0.4, 0.2)
    assert head.status().pan_tilt_moving
    clock.advance(0.2)
    status = head.status()
    approx(status.position, 0.8, -0.5, 0.25)
    assert not status.pan_tilt_moving
    assert status.zoom_moving
    clock.advance(3.0)
    status = head.status()
    assert status.position == PtzVector(0.8, -0.5, 1.0)  # exactly on target, not merely close
    assert not status.moving


def test_speed_is_a_fraction_of_full_speed(head: PtzModel, clock: Clock) -> None:
    head.absolute_move((-1.0, 0.0), pan_tilt_speed=(0.25, 0.0))
    clock.advance(2.0)
    approx(head.position(), -0.5, 0.0, 0.0)
    clock.advance(2.0)
    approx(head.position(), -1.0, 0.0, 0.0)
    assert not head.status().moving


def test_a_new_command_starts_from_where_the_head_is(head: PtzModel, clock: Clock) -> None:
    head.absolute_move((1.0, 0.0))
    clock.advance(0.5)
    head.absolute_move((0.0, 0.0))
    clock.advance(0.25)
    approx(head.position(), 0.25, 0.0, 0.0)
    clock.advance(0.25)
    approx(head.position(), 0.0, 0.0, 0.0)
    assert not head.status().moving


def test_continuous_move_stops_after_its_timeout(head: PtzModel, clock: Clock) -> None:
    head.continuous_move((0.5, -1.0), 1.0, timeout=1.0)
    clock.advance(0.5)
    approx(head.position(), 0.25, -0.25, 0.125)
    assert head.status().moving
    clock.advance(10.0)
    status = head.status()
    approx(status.position, 0.5, -0.5, 0.25)
    assert not status.moving


def test_continuous_move_stops_at_the_limits(head: PtzModel, clock: Clock) -> None:
    head.continuous_move((1.0, 0.0), -1.0)  # zoom is already at its lower limit
    assert not head.status().zoom_moving
    clock.advance(0.5)
    assert head.status().pan_tilt_moving
    clock.advance(5.0)
    status = head.status()
    approx(status.position, 1.0, 0.0, 0.0)
    assert not status.moving


def test_stop_freezes_the_head_where_it_is(head: PtzModel, clock: Clock) -> None:
    head.continuous_move((-1.0, 1.0), 1.0)
    clock.advance(0.3)
    head.stop()
    clock.advance(5.0)
    status = head.status()
    approx(status.position, -0.3, 0.15, 0.075)
    assert not status.moving


def test_stop_can_leave_zoom_running(head: PtzModel, clock: Clock) -> None:
    head.continuous_move((1.0, 0.0), 1.0)
    clock.advance(0.2)
    head.stop(pan_tilt=True, zoom=False)
    clock.advance(0.2)
    status = head.status()
    approx(status.position, 0.2, 0.0, 0.1)
    assert status.zoom_moving
    assert not status.pan_tilt_moving


def test_omitted_parts_keep_moving_and_zero_velocity_stops(head: PtzModel, clock: Clock) -> None:
    head.continuous_move((1.0, 1.0), 1.0)
    clock.advance(0.2)
    head.continuous_move((0.0, 1.0))  # pan stops, tilt continues, zoom untouched
    clock.advance(0.2)
    approx(head.position(), 0.2, 0.2, 0.1)
    status = head.status()
    assert status.pan_tilt_moving
    assert status.zoom_moving


def test_relative_move_goes_from_here_and_is_clamped(head: PtzModel, clock: Clock) -> None:
    head.relative_move((0.6, 0.0), 0.5)
    clock.advance(10.0)
    approx(head.position(), 0.6, 0.0, 0.5)
    head.relative_move((0.6, -1.0), 1.0)
    clock.advance(10.0)
    approx(head.position(), 1.0, -1.0, 1.0)


@pytest.mark.parametrize(
    ("command", "arg"),
    [
        (lambda h: h.absolute_move((1.5, 0.0)), PtzArg.POSITION),
        (lambda h: h.absolute_move(None, -0.1), PtzArg.POSITION),
        (lambda h: h.absolute_move((0.0, math.nan)), PtzArg.POSITION),
        (lambda h: h.absolute_move((0.5, 0.5), pan_tilt_speed=(1.5, 0.5)), PtzArg.SPEED),
        (lambda h: h.relative_move((0.0, 0.0), -2.0), PtzArg.TRANSLATION),
        (lambda h: h.continuous_move((2.0, 0.0)), PtzArg.VELOCITY),
        (lambda h: h.continuous_move((0.5, 0.0), timeout=0.01), PtzArg.TIMEOUT),
        (lambda h: h.continuous_move((0.5, 0.0), timeout=math.inf), PtzArg.TIMEOUT),
        (lambda h: h.set_preset(name="x" * 65), PtzArg.PRESET_NAME),
    ],
)
def test_out_of_range_arguments_are_refused_and_change_nothing(
    head: PtzModel, clock: Clock, command: Callable[[PtzModel], object], arg: PtzArg
) -> None:
    head.absolute_move((0.5, 0.0))
    clock.advance(0.25)
    with pytest.raises(InvalidPtzArgument) as info:
        command(head)
    assert info.value.arg is arg
    clock.advance(0.25)
    approx(head.position(), 0.5, 0.0, 0.0)  # the earlier move went on undisturbed
    assert head.presets() == []


def test_values_a_hair_outside_a_bound_are_clamped(head: PtzModel, clock: Clock) -> None:
    head.absolute_move((1.0000001, -1.0000001), 1.0000001)
    clock.advance(10.0)
    assert head.position() == PtzVector(1.0, -1.0, 1.0)


def test_presets_round_trip(head: PtzModel, clock: Clock) -> None:
    head.absolute_move((0.5, 0.25), 0.5)
    clock.advance(10.0)
    door = head.set_preset("door")
    assert door == "1"
    second = head.set_preset()
    assert second == "2"
    assert [(p.token, p.name) for p in head.presets()] == [("1", "door"), ("2", "Preset 2")]
    assert head.preset("1").position == PtzVector(0.5, 0.25, 0.5)

    head.absolute_move((-0.5, 0.0), 0.0)
    clock.advance(10.0)
    assert head.set_preset(token="2") == "2"  # overwrite keeps the name
    assert head.preset("2").name == "Preset 2"
    assert head.preset("2").position == PtzVector(-0.5, 0.0, 0.0)
    head.set_preset("car park", token="2")  # ...or renames
    assert head.preset("2").name == "car park"

    head.goto_preset("1")
    assert head.status().moving
    clock.advance(10.0)
    assert head.position() == PtzVector(0.5, 0.25, 0.5)

    head.remove_preset("1")
    assert [p.token for p in head.presets()] == ["2"]
    assert head.set_preset("gate") == "1"  # the lowest free token is reused


def test_preset_errors(head: PtzModel) -> None:
    head.set_preset("door")
    with pytest.raises(PresetNameInUseError):
        head.set_preset("door")
    with pytest.raises(PresetNotFoundError):
        head.set_preset("x", token="9")
    with pytest.raises(PresetNotFoundError):
        head.goto_preset("9")
    with pytest.raises(PresetNotFoundError):
        head.remove_preset("9")
    head.set_preset()
    head.set_preset()
    with pytest.raises(TooManyPresetsError):
        head.set_preset()
    head.set_preset("door", token="1")  # renaming a preset to its own name is fine


def test_home_position(head: PtzModel, clock: Clock) -> None:
    assert head.home == PtzVector(0.0, 0.0, 0.0)
    head.absolute_move((-0.4, 0.4), 0.2)
    clock.advance(10.0)
    head.set_home()
    head.absolute_move((1.0, 1.0), 1.0)
    clock.advance(10.0)
    head.goto_home(pan_tilt_speed=(0.5, 0.5), zoom_speed=1.0)
    clock.advance(1.0)
    approx(head.position(), 0.5, 0.75, 0.75)
    clock.advance(10.0)
    assert head.position() == PtzVector(-0.4, 0.4, 0.2)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="pan_speed"):
        PtzLimits(pan_speed=0.0)
    with pytest.raises(ValueError, match="default_timeout"):
        PtzLimits(default_timeout=1000.0)
    with pytest.raises(InvalidPtzArgument):
        PtzModel(initial=PtzVector(0.0, 0.0, 2.0))
