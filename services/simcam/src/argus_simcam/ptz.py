"""A pan/tilt/zoom head that takes time to move.

Positions use ONVIF's generic normalised spaces: pan and tilt in [-1, 1], zoom in [0, 1]. Every axis moves at
a bounded speed, so a command starts a motion that ends later; nothing runs in the background. Each axis keeps
the straight-line segment of its last command (start, speed, end time) and the position at any instant is
computed from it when asked, so a thousand idle cameras cost nothing and a frame renderer can ask every frame.

The clock is injected (`now`, seconds, monotonic); tests drive it by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "PAN_RANGE",
    "TILT_RANGE",
    "ZOOM_RANGE",
    "InvalidPtzArgument",
    "Preset",
    "PresetNameInUseError",
    "PresetNotFoundError",
    "PtzArg",
    "PtzError",
    "PtzLimits",
    "PtzModel",
    "PtzStatus",
    "PtzVector",
    "TooManyPresetsError",
]

PAN_RANGE = (-1.0, 1.0)
TILT_RANGE = (-1.0, 1.0)
ZOOM_RANGE = (0.0, 1.0)
TRANSLATION_RANGE = (-1.0, 1.0)
VELOCITY_RANGE = (-1.0, 1.0)
SPEED_RANGE = (0.0, 1.0)
MAX_PRESET_NAME = 64
# Clients send floats that went through float32 or decimal text; accept values this close to a bound.
_EPSILON = 1e-6


class PtzVector(NamedTuple):
    """A position (or a translation) in the generic spaces. A tuple, so it is `ViewWindow`-compatible."""

    pan: float
    tilt: float
    zoom: float


_CENTRE = PtzVector(0.0, 0.0, 0.0)


class PtzArg(StrEnum):
    """Which argument of a command was out of its range."""

    POSITION = "position"
    TRANSLATION = "translation"
    VELOCITY = "velocity"
    SPEED = "speed"
    TIMEOUT = "timeout"
    PRESET_NAME = "preset_name"


class PtzError(Exception):
    """Base of the PTZ model's errors; a failed command leaves the model unchanged."""


class InvalidPtzArgument(PtzError, ValueError):
    def __init__(self, arg: PtzArg, message: str) -> None:
        super().__init__(message)
        self.arg = arg


class PresetNotFoundError(PtzError, KeyError):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token

    def __str__(self) -> str:
        return f"no preset with token {self.token!r}"


class PresetNameInUseError(PtzError):
    def __init__(self, name: str, token: str) -> None:
        super().__init__(f"preset name {name!r} is already used by preset {token!r}")
        self.name = name
        self.token = token


class TooManyPresetsError(PtzError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the camera holds at most {limit} presets")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class PtzLimits:
    """Mechanical limits of the head. Speeds are in normalised units per second at full speed (1.0).

    The defaults make a full pan sweep (-1 to 1) take 2 s, a full tilt 2.5 s and a full zoom 2.5 s.
    """

    pan_speed: float = 1.0
    tilt_speed: float = 0.8
    zoom_speed: float = 0.4
    # Speed (fraction of the above) used when a command gives none, or gives 0.
    default_speed: float = 1.0
    max_presets: int = 64
    # Bounds of a ContinuousMove timeout, seconds, and the timeout used when a client gives none.
    min_timeout: float = 0.1
    max_timeout: float = 300.0
    default_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("pan_speed", "tilt_speed", "zoom_speed", "min_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0 < self.default_speed <= 1:
            raise ValueError(f"default_speed must be in (0, 1], got {self.default_speed!r}")
        if self.max_presets < 0:
            raise ValueError("max_presets must not be negative")
        if not self.min_timeout <= self.default_timeout <= self.max_timeout:
            raise ValueError("default_timeout must lie between min_timeout and max_timeout")


@dataclass(frozen=True, slots=True)
class PtzStatus:
    position: PtzVector
    pan_tilt_moving: bool
    zoom_moving: bool

    @property
    def moving(self) -> bool:
        return self.pan_tilt_moving or self.zoom_moving


@dataclass(frozen=True, slots=True)
class Preset:
    token: str
    name: str
    position: PtzVector


class _Segment(NamedTuple):
    """One axis's motion: from `start` at `t0` at `velocity` (units/s) until `t_end`, then still at `end`."""

    start: float
    t0: float
    velocity: float
    t_end: float
    end: float

    def at(self, t: float) -> float:
        if t >= self.t_end:
            return self.end
        if t <= self.t0:
            return self.start
        return self.start + self.velocity * (t - self.t0)

    def moving(self, t: float) -> bool:
        return t < self.t_end


def _still(position: float, t: float) -> _Segment:
    return _Segment(position, t, 0.0, t, position)


@dataclass(frozen=True, slots=True)
class _Axis:
    lo: float
    hi: float
    max_speed: float

    def go_to(self, now: _Segment, t: float, target: float, speed_fraction: float) -> _Segment:
        """Move to `target` at `speed_fraction` of full speed."""
        p = now.at(t)
        target = min(self.hi, max(self.lo, target))
        speed = speed_fraction * self.max_speed
        distance = target - p
        if distance == 0 or speed <= 0:
            return _still(p, t)
        return _Segment(p, t, math.copysign(speed, distance), t + abs(distance) / speed, target)

    def run(self, now: _Segment, t: float, velocity_fraction: float, duration: float | None) -> _Segment:
        """Move at `velocity_fraction` of full speed (signed) for `duration` seconds, or until a limit."""
        p = now.at(t)
        velocity = velocity_fraction * self.max_speed
        if velocity == 0:
            return _still(p, t)
        limit = self.hi if velocity > 0 else self.lo
        t_limit = t + (limit - p) / velocity
        if duration is None or t + duration >= t_limit:
            return _Segment(p, t, velocity, t_limit, limit)
        return _Segment(p, t, velocity, t + duration, p + velocity * duration)


def _check(value: float, bounds: tuple[float, float], arg: PtzArg, what: str) -> float:
    lo, hi = bounds
    if not math.isfinite(value) or value < lo - _EPSILON or value > hi + _EPSILON:
        raise InvalidPtzArgument(arg, f"{what} {value!r} is outside [{lo}, {hi}]")
    return min(hi, max(lo, value))


def _speed(value: float | None, default: float, what: str) -> float:
    if value is None:
        return default
    value = _check(value, SPEED_RANGE, PtzArg.SPEED, what)
    return value if value > 0 else default


class PtzModel:
    """The head of one camera. Commands validate everything before changing anything.

    Commands come from one thread (the event loop); `position()`, `view()` and `status()` may be called
    from any thread (a renderer's), and always see a whole command's effect or none of it.
    """

    def __init__(
        self,
        *,
        limits: PtzLimits | None = None,
        now: Callable[[], float] = time.monotonic,
        initial: PtzVector | None = None,
        home: PtzVector | None = None,
    ) -> None:
        """`initial` and `home` default to the centre, fully zoomed out."""
        self._limits = limits or PtzLimits()
        self._now = now
        self._home = self._check_position(home or _CENTRE)
        initial = self._check_position(initial or _CENTRE)
        self._pan = _Axis(*PAN_RANGE, self._limits.pan_speed)
        self._tilt = _Axis(*TILT_RANGE, self._limits.tilt_speed)
        self._zoom = _Axis(*ZOOM_RANGE, self._limits.zoom_speed)
        t = now()
        # (pan, tilt, zoom), replaced as a whole by each command so readers on other threads never see half
        # of one.
        self._motion = (_still(initial.pan, t), _still(initial.tilt, t), _still(initial.zoom, t))
        self._presets: dict[str, Preset] = {}

    @property
    def limits(self) -> PtzLimits:
        return self._limits

    @property
    def home(self) -> PtzVector:
        return self._home

    # -- reading -----------------------------------------------------------------------------------------------

    def position(self, now: float | None = None) -> PtzVector:
        t = self._now() if now is None else now
        pan, tilt, zoom = self._motion
        return PtzVector(pan.at(t), tilt.at(t), zoom.at(t))

    def view(self) -> tuple[float, float, float]:
        """Where the head points now, as `(pan, tilt, zoom)` for the scene's `ViewWindow`."""
        return self.position()

    def status(self, now: float | None = None) -> PtzStatus:
        t = self._now() if now is None else now
        pan, tilt, zoom = self._motion
        return PtzStatus(
            position=PtzVector(pan.at(t), tilt.at(t), zoom.at(t)),
            pan_tilt_moving=pan.moving(t) or tilt.moving(t),
            zoom_moving=zoom.moving(t),
        )

    # -- moving ------------------------------------------------------------------------------------------------

    def continuous_move(
        self,
        pan_tilt: tuple[float, float] | None = None,
        zoom: float | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Move at the given velocities (fractions of full speed, -1..1) until `timeout` s, a limit or a stop.

        An omitted part (`pan_tilt` or `zoom` None) keeps doing what it was doing; a zero velocity stops it.
        `timeout` None means no timeout.
        """
        if pan_tilt is not None:
            pan_tilt = (
                _check(pan_tilt[0], VELOCITY_RANGE, PtzArg.VELOCITY, "pan velocity"),
                _check(pan_tilt[1], VELOCITY_RANGE, PtzArg.VELOCITY, "tilt velocity"),
            )
        if zoom is not None:
            zoom = _check(zoom, VELOCITY_RANGE, PtzArg.VELOCITY, "zoom velocity")
        if timeout is not None:
            bounds = (self._limits.min_timeout, self._limits.max_timeout)
            timeout = _check(timeout, bounds, PtzArg.TIMEOUT, "timeout")
        t = self._now()
        pan, tilt, zoom_now = self._motion
        if pan_tilt is not None:
            pan = self._pan.run(pan, t, pan_tilt[0], timeout)
            tilt = self._tilt.run(tilt, t, pan_tilt[1], timeout)
        if zoom is not None:
            zoom_now = self._zoom.run(zoom_now, t, zoom, timeout)
        self._motion = (pan, tilt, zoom_now)

    def absolute_move(
        self,
        pan_tilt: tuple[float, float] | None = None,
        zoom: float | None = None,
        *,
        pan_tilt_speed: tuple[float, float] | None = None,
        zoom_speed: float | None = None,
    ) -> None:
        """Move to a position; speeds are fractions of full speed (0..1, 0 or None: the default speed)."""
        target = self.position()
        if pan_tilt is not None:
            target = target._replace(
                pan=_check(pan_tilt[0], PAN_RANGE, PtzArg.POSITION, "pan position"),
                tilt=_check(pan_tilt[1], TILT_RANGE, PtzArg.POSITION, "tilt position"),
            )
        if zoom is not None:
            target = target._replace(zoom=_check(zoom, ZOOM_RANGE, PtzArg.POSITION, "zoom position"))
        self._go_to(target, pan_tilt is not None, zoom is not None, pan_tilt_speed, zoom_speed)

    def relative_move(
        self,
        pan_tilt: tuple[float, float] | None = None,
        zoom: float | None = None,
        *,
        pan_tilt_speed: tuple[float, float] | None = None,
        zoom_speed: float | None = None,
    ) -> None:
        """Move by a translation (-1..1 per axis) from where the head is now; the target is clamped."""
        here = self.position()
        target = here
        if pan_tilt is not None:
            dp = _check(pan_tilt[0], TRANSLATION_RANGE, PtzArg.TRANSLATION, "pan translation")
            dt = _check(pan_tilt[1], TRANSLATION_RANGE, PtzArg.TRANSLATION, "tilt translation")
            target = target._replace(pan=here.pan + dp, tilt=here.tilt + dt)
        if zoom is not None:
            dz = _check(zoom, TRANSLATION_RANGE, PtzArg.TRANSLATION, "zoom translation")
            target = target._replace(zoom=here.zoom + dz)
        self._go_to(target, pan_tilt is not None, zoom is not None, pan_tilt_speed, zoom_speed)

    def stop(self, *, pan_tilt: bool = True, zoom: bool = True) -> None:
        t = self._now()
        pan, tilt, zoom_now = self._motion
        if pan_tilt:
            pan, tilt = _still(pan.at(t), t), _still(tilt.at(t), t)
        if zoom:
            zoom_now = _still(zoom_now.at(t), t)
        self._motion = (pan, tilt, zoom_now)

    def _go_to(
        self,
        target: PtzVector,
        move_pan_tilt: bool,
        move_zoom: bool,
        pan_tilt_speed: tuple[float, float] | None,
        zoom_speed: float | None,
    ) -> None:
        default = self._limits.default_speed
        pan_s, tilt_s = (None, None) if pan_tilt_speed is None else pan_tilt_speed
        pan_speed = _speed(pan_s, default, "pan speed")
        tilt_speed = _speed(tilt_s, default, "tilt speed")
        z_speed = _speed(zoom_speed, default, "zoom speed")
        t = self._now()
        pan, tilt, zoom = self._motion
        if move_pan_tilt:
            pan = self._pan.go_to(pan, t, target.pan, pan_speed)
            tilt = self._tilt.go_to(tilt, t, target.tilt, tilt_speed)
        if move_zoom:
            zoom = self._zoom.go_to(zoom, t, target.zoom, z_speed)
        self._motion = (pan, tilt, zoom)

    # -- presets and home --------------------------------------------------------------------------------------

    def presets(self) -> list[Preset]:
        return sorted(self._presets.values(), key=lambda p: (len(p.token), p.token))

    def preset(self, token: str) -> Preset:
        try:
            return self._presets[token]
        except KeyError:
            raise PresetNotFoundError(token) from None

    def set_preset(self, name: str | None = None, token: str | None = None) -> str:
        """Store the current position: overwrite preset `token`, or create a new one. Returns the token."""
        if token is not None and token not in self._presets:
            raise PresetNotFoundError(token)
        if name is not None and not 0 < len(name) <= MAX_PRESET_NAME:
            raise InvalidPtzArgument(PtzArg.PRESET_NAME, f"a preset name has 1 to {MAX_PRESET_NAME} characters")
        if name is not None:
            for other in self._presets.values():
                if other.name == name and other.token != token:
                    raise PresetNameInUseError(name, other.token)
        if token is None:
            if len(self._presets) >= self._limits.max_presets:
                raise TooManyPresetsError(self._limits.max_presets)
            token = next(str(n) for n in range(1, len(self._presets) + 2) if str(n) not in self._presets)
            if name is None:
                taken = {p.name for p in self._presets.values()}
                name = next(
                    candidate
                    for n in range(len(taken) + 1)
                    if (candidate := f"Preset {token}" + (f" ({n})" if n else "")) not in taken
                )
        elif name is None:
            name = self._presets[token].name
        self._presets[token] = Preset(token, name, self.position())
        return token

    def goto_preset(
        self,
        token: str,
        *,
        pan_tilt_speed: tuple[float, float] | None = None,
        zoom_speed: float | None = None,
    ) -> None:
        target = self.preset(token).position
        self._go_to(target, True, True, pan_tilt_speed, zoom_speed)

    def remove_preset(self, token: str) -> None:
        if self._presets.pop(token, None) is None:
            raise PresetNotFoundError(token)

    def set_home(self) -> None:
        self._home = self.position()

    def goto_home(
        self,
        *,
        pan_tilt_speed: tuple[float, float] | None = None,
        zoom_speed: float | None = None,
    ) -> None:
        self._go_to(self._home, True, True, pan_tilt_speed, zoom_speed)

    @staticmethod
    def _check_position(p: PtzVector) -> PtzVector:
        return PtzVector(
            _check(p.pan, PAN_RANGE, PtzArg.POSITION, "pan position"),
            _check(p.tilt, TILT_RANGE, PtzArg.POSITION, "tilt position"),
            _check(p.zoom, ZOOM_RANGE, PtzArg.POSITION, "zoom position"),
        )
