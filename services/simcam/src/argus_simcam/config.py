"""Configuration of simcam, read from ARGUS_* environment variables (and an optional fleet file)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from argus_core.runtime import RuntimeConfig

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Width = Annotated[int, msgspec.Meta(ge=64, le=7680, multiple_of=2)]
Height = Annotated[int, msgspec.Meta(ge=64, le=4320, multiple_of=2)]
Fps = Annotated[int, msgspec.Meta(ge=1, le=60)]
Bitrate = Annotated[int, msgspec.Meta(ge=50_000, le=50_000_000)]


class Config(RuntimeConfig, frozen=True, kw_only=True):
    """Without a fleet file, `ARGUS_CAMERAS` names the cameras and the other settings apply to all of them."""

    username: Annotated[str, msgspec.Meta(min_length=1)]
    password: Annotated[str, msgspec.Meta(min_length=1)]
    fleet_file: str = ""  # a TOML fleet (see argus_simcam.fleet); overrides the per-camera settings below
    cameras: tuple[str, ...] = ("cam-01",)
    mode: Literal["preencoded", "live"] = "preencoded"
    codec: Literal["h264", "h265"] = "h264"
    main_width: Width = 1280
    main_height: Height = 720
    main_fps: Fps = 25
    main_bitrate: Bitrate = 2_000_000
    sub_width: Width = 640
    sub_height: Height = 360
    sub_bitrate: Bitrate = 500_000
    rtsp_host: str = "0.0.0.0"
    rtsp_port: Port = 8554
    advertise_host: str = "127.0.0.1"  # the host name put into stream and ONVIF URLs
    onvif_port_base: Port = 0  # 0: ONVIF only under /<camera>/onvif/ on the HTTP port; else one port each
    discovery_port: Port = 0  # 0: no WS-Discovery responder (3702 on a real network)
