"""Faults on demand for one simulated camera.

A `FaultState` is a plain mutable record read by the media code (scene, encoders, stream sources), the RTSP
server and the ONVIF server. Set fields directly, call the action methods, or pass a dict to `update()` (what the
HTTP control API does); `to_dict()` gives the current state in the same shape.

Fields (the dict keys are the same names):

- `stall: bool` - the camera stops sending RTP/RTCP but keeps its connections; `stall_for(seconds)` for a while.
- `freeze: bool` - the picture stops changing (the last frame repeats, timecode included); frames keep coming.
- `cover: None | "black" | (y, u, v)` - the lens is covered: a uniform picture (the OSD strip stays).
- `defocus: bool` - the picture is blurred.
- `shift: None | (dx, dy)` - the camera was knocked: the view moves by (dx, dy) times its own width and height.
- `corrupt_nal_rate: float` - share of video NAL units with bytes flipped inside their payload.
- `drop_nal_rate: float` - share of video NAL units dropped.
- `clock_skew_s: float` - the camera's clock runs this far ahead of true time (timecode, capture time, RTCP NTP).
- `refuse_auth: bool` - every authenticated request (RTSP and ONVIF) is answered 401.
- `resolution: None | (width, height)` - the main stream switches to this size (new SPS/PPS in band).

Actions (dict keys with the argument as value): `drop_connections` (any value: every RTSP session of the camera is
closed now), `reboot` (seconds: every connection is dropped and the camera refuses service for that long),
`stall_for` (seconds), `clear` (any value: back to a healthy camera).

Times come from `time.monotonic()`. Listeners (`add_listener`) are called synchronously, on the thread that made
the change, with a `FaultEvent`; the RTSP server uses them to drop connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypeAlias

__all__ = ["Cover", "FaultError", "FaultEvent", "FaultListener", "FaultState"]

_log = logging.getLogger(__name__)

Cover: TypeAlias = None | Literal["black"] | tuple[int, int, int]


class FaultEvent(StrEnum):
    CHANGED = "changed"
    DROP_CONNECTIONS = "drop_connections"
    REBOOT = "reboot"


FaultListener: TypeAlias = Callable[[FaultEvent], None]


class FaultError(ValueError):
    """A fault update that names an unknown fault or has a bad value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _number(key: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(key, f"expected a number, got {value!r}")
    number = float(value)
    if not lo <= number <= hi:
        raise FaultError(key, f"{number} is outside [{lo}, {hi}]")
    return number


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise FaultError(key, f"expected true or false, got {value!r}")
    return value


def _pair(key: str, value: object) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise FaultError(key, f"expected two numbers, got {value!r}")
    return _number(key, value[0], -1e6, 1e6), _number(key, value[1], -1e6, 1e6)


def _cover(value: object) -> Cover:
    if value is None or value is False:
        return None
    if value == "black" or value is True:
        return "black"
    if isinstance(value, list | tuple) and len(value) == 3:
        y, u, v = (int(_number("cover", c, 0, 255)) for c in value)
        return (y, u, v)
    raise FaultError("cover", f'expected null, "black" or [y, u, v], got {value!r}')


def _resolution(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    w, h = _pair("resolution", value)
    width, height = int(w), int(h)
    if width != w or height != h or width < 64 or height < 64 or width > 4096 or height > 2304:
        raise FaultError("resolution", f"bad size {value!r}")
    if width % 2 or height % 2:
        raise FaultError("resolution", "width and height must be even")
    return (width, height)


@dataclass(eq=False)
class FaultState:
    stall: bool = False
    freeze: bool = False
    cover: Cover = None
    defocus: bool = False
    shift: tuple[float, float] | None = None
    corrupt_nal_rate: float = 0.0
    drop_nal_rate: float = 0.0
    clock_skew_s: float = 0.0
    refuse_auth: bool = False
    resolution: tuple[int, int] | None = None
    stall_until: float = 0.0
    reboot_until: float = 0.0
    _listeners: list[FaultListener] = field(default_factory=list, repr=False)

    # -- derived state --------------------------------------------------------------------------------------------
    @property
    def stalled(self) -> bool:
        return self.stall or time.monotonic() < self.stall_until

    @property
    def rebooting(self) -> bool:
        return time.monotonic() < self.reboot_until

    @property
    def reboot_remaining(self) -> float:
        return max(0.0, self.reboot_until - time.monotonic())

    @property
    def clock_skew_ns(self) -> int:
        return round(self.clock_skew_s * 1e9)

    @property
    def alters_picture(self) -> bool:
        """Whether the picture differs from the healthy camera's (a pre-encoded stream then encodes live)."""
        return self.freeze or self.cover is not None or self.defocus or self.shift is not None

    # -- actions --------------------------------------------------------------------------------------------------
    def add_listener(self, listener: FaultListener) -> Callable[[], None]:
        """Call `listener` on every change; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def drop_connections(self) -> None:
        """Close every RTSP session of the camera now."""
        self._emit(FaultEvent.DROP_CONNECTIONS)

    def reboot(self, seconds: float) -> None:
        """Drop every connection and refuse service for `seconds`."""
        self.reboot_until = time.monotonic() + max(0.0, seconds)
        self._emit(FaultEvent.REBOOT)

    def stall_for(self, seconds: float) -> None:
        self.stall_until = time.monotonic() + max(0.0, seconds)
        self._emit(FaultEvent.CHANGED)

    def clear(self) -> None:
        """Back to a healthy camera (a reboot in progress finishes too)."""
        self.stall = self.freeze = self.defocus = self.refuse_auth = False
        self.cover = self.shift = self.resolution = None
        self.corrupt_nal_rate = self.drop_nal_rate = self.clock_skew_s = 0.0
        self.stall_until = self.reboot_until = 0.0
        self._emit(FaultEvent.CHANGED)

    def _emit(self, event: FaultEvent) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the others
                _log.exception("fault listener failed on %s", event)

    # -- the control API's view -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {
            "stall": self.stalled,
            "freeze": self.freeze,
            "cover": list(self.cover) if isinstance(self.cover, tuple) else self.cover,
            "defocus": self.defocus,
            "shift": list(self.shift) if self.shift is not None else None,
            "corrupt_nal_rate": self.corrupt_nal_rate,
            "drop_nal_rate": self.drop_nal_rate,
            "clock_skew_s": self.clock_skew_s,
            "refuse_auth": self.refuse_auth,
            "resolution": list(self.resolution) if self.resolution is not None else None,
            "rebooting": self.rebooting,
            "reboot_remaining_s": round(self.reboot_remaining, 3),
        }

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update (validated as a whole before anything changes); raises `FaultError`."""
        staged: dict[str, object] = {}
        actions: list[tuple[str, float]] = []
        for key, value in changes.items():
            match key:
                case "stall" | "freeze" | "defocus" | "refuse_auth":
                    staged[key] = _flag(key, value)
                case "cover":
                    staged[key] = _cover(value)
                case "shift":
                    staged[key] = None if value is None else _pair(key, value)
                case "corrupt_nal_rate" | "drop_nal_rate":
                    staged[key] = _number(key, value, 0.0, 1.0)
                case "clock_skew_s":
                    staged[key] = _number(key, value, -1e9, 1e9)
                case "resolution":
                    staged[key] = _resolution(value)
                case "reboot" | "stall_for":
                    actions.append((key, _number(key, value, 0.0, 86400.0)))
                case "drop_connections" | "clear":
                    if value:
                        actions.append((key, 0.0))
                case "rebooting" | "reboot_remaining_s":
                    pass  # read-only fields of to_dict(); ignored so a read-modify-write round trip works
                case _:
                    raise FaultError(key, "unknown fault")
        if any(name == "clear" for name, _ in actions):
            self.clear()
        for key, value in staged.items():
            setattr(self, key, value)
        if staged:
            self._emit(FaultEvent.CHANGED)
        for name, arg in actions:
            match name:
                case "reboot":
                    self.reboot(arg)
                case "stall_for":
                    self.stall_for(arg)
                case "drop_connections":
                    self.drop_connections()
