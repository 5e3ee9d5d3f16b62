"""Configuration of the ptz service, read from ARGUS_* environment variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from argus_core.db import DatabaseConfig
from argus_core.runtime import RuntimeConfig


class PtzSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_PTZ_*`: arbitration and scheduling."""

    # Control of a camera is released this long after its holder's last command.
    lease_idle_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # Every ONVIF request gets this long before it is reported as a timeout.
    onvif_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    # The longest keep-alive window a continuous move may ask for (its `timeout_s` is capped to it).
    move_timeout_max_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    # Granularity of the lease keeper (refresh, stop of a lapsed continuous move, release) and of tours and park.
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=5)] = 0.1
    # How often each pod re-reads tours and park settings and claims cameras whose automation has no runner.
    scan_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # Commands that may wait for one camera in one pod; more are answered `busy` at once.
    camera_queue: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    ptz: PtzSettings = msgspec.field(default_factory=PtzSettings)
