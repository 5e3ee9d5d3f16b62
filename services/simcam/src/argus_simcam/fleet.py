"""The fleet: which simulated cameras to run and what each sends.

A fleet file is TOML, one `[[camera]]` table per camera; every key but `id` is optional and defaults to the
service's settings (`ARGUS_MODE`, `ARGUS_MAIN_WIDTH`, ...):

    [[camera]]
    id = "cam-01"
    name = "High St north"
    latitude = 52.6369
    longitude = -1.1398
    codec = "h264"          # or "h265"
    mode = "preencoded"     # or "live"
    main = { width = 1920, height = 1080, fps = 25, bitrate = 4000000 }
    sub = { width = 640, height = 360, bitrate = 500000 }
    ptz = true
    faults = { clock_skew_s = 3.5 }
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from argus_core.errors import ConfigError
from argus_simcam.config import Config

CameraId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    width: Annotated[int, msgspec.Meta(ge=64, le=7680, multiple_of=2)]
    height: Annotated[int, msgspec.Meta(ge=64, le=4320, multiple_of=2)]
    fps: Annotated[int, msgspec.Meta(ge=1, le=60)] = 25
    bitrate: Annotated[int, msgspec.Meta(ge=50_000, le=50_000_000)] = 2_000_000


class CameraSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: CameraId
    name: str = ""
    latitude: float | None = None
    longitude: float | None = None
    codec: Literal["h264", "h265"] = "h264"
    mode: Literal["preencoded", "live"] = "preencoded"
    main: StreamSettings
    sub: StreamSettings | None = None
    ptz: bool = True
    faults: dict[str, Any] = {}

    @property
    def title(self) -> str:
        return self.name or self.id


def from_config(config: Config) -> list[CameraSettings]:
    """The fleet the configuration describes: the fleet file if given, else `ARGUS_CAMERAS` alike."""
    if config.fleet_file:
        return load_fleet(Path(config.fleet_file), config)
    main = StreamSettings(
        width=config.main_width, height=config.main_height, fps=config.main_fps, bitrate=config.main_bitrate
    )
    sub = StreamSettings(
        width=config.sub_width, height=config.sub_height, fps=config.main_fps, bitrate=config.sub_bitrate
    )
    return [
        CameraSettings(id=camera, codec=config.codec, mode=config.mode, main=main, sub=sub) for camera in config.cameras
    ]


def load_fleet(path: Path, config: Config) -> list[CameraSettings]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("ARGUS_FLEET_FILE", f"cannot read fleet {path}: {exc}") from exc
    defaults: dict[str, Any] = {
        "codec": config.codec,
        "mode": config.mode,
        "main": {
            "width": config.main_width,
            "height": config.main_height,
            "fps": config.main_fps,
            "bitrate": config.main_bitrate,
        },
        "sub": {"width": config.sub_width, "height": config.sub_height, "bitrate": config.sub_bitrate},
    }
    cameras = data.get("camera", [])
    if not isinstance(cameras, list) or not cameras:
        raise ConfigError("ARGUS_FLEET_FILE", f"{path} has no [[camera]] tables")
    try:
        fleet = [msgspec.convert(defaults | entry, CameraSettings) for entry in cameras]
    except msgspec.ValidationError as exc:
        raise ConfigError("ARGUS_FLEET_FILE", f"{path}: {exc}") from exc
    ids = [c.id for c in fleet]
    if len(set(ids)) != len(ids):
        raise ConfigError("ARGUS_FLEET_FILE", f"{path}: camera ids repeat: {sorted(ids)}")
    return fleet
