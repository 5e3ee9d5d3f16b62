"""What the ONVIF server needs to know about one simulated camera."""

from __future__ import annotations

import hashlib
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from argus_simcam.ptz import PtzModel

__all__ = ["FaultFlags", "FaultSwitches", "OnvifCamera", "VideoCodec", "VideoProfile"]


class VideoCodec(StrEnum):
    H264 = "H264"
    H265 = "H265"


@dataclass(frozen=True, slots=True)
class VideoProfile:
    """One media profile (one encoded stream) of the camera, e.g. `main` and `sub`."""

    token: str
    name: str
    width: int
    height: int
    codec: VideoCodec = VideoCodec.H264
    fps: int = 25
    bitrate_kbps: int = 4096
    gov_length: int = 50
    # Profile of the codec as ONVIF names it (H.264: Baseline/Main/Extended/High; H.265: Main/Main10).
    codec_profile: str = "Main"
    constant_bitrate: bool = False

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token):
            raise ValueError(f"a profile token must be non-empty and have no spaces: {self.token!r}")
        if min(self.width, self.height, self.fps, self.bitrate_kbps, self.gov_length) <= 0:
            raise ValueError(f"profile {self.token!r}: sizes, rates and GOP length must be positive")


class FaultFlags(Protocol):
    """The faults the ONVIF server honours; the media half's `FaultState` provides them."""

    @property
    def refuse_auth(self) -> bool:
        """Every authenticated request fails with NotAuthorized (the password was changed under us)."""
        ...

    @property
    def rebooting(self) -> bool:
        """The device is rebooting: every request gets 503."""
        ...

    @property
    def clock_skew_s(self) -> float:
        """The camera's clock runs this many seconds ahead of true time (on top of `clock_offset`)."""
        ...


@dataclass(slots=True)
class FaultSwitches:
    """A plain `FaultFlags` to flip by hand (tests, cameras without a fault plan)."""

    refuse_auth: bool = False
    rebooting: bool = False
    clock_skew_s: float = 0.0


@dataclass(eq=False, kw_only=True)
class OnvifCamera:
    """One camera as its ONVIF services present it. Fields may be changed while serving (clock_offset...).

    `rtsp_url(profile, host)` and `snapshot_url(profile, host)` get the host name (or bracketed IPv6 address)
    the client used to reach the ONVIF service, so the URLs they return are reachable the same way. Without
    `snapshot_url`, snapshots are served by the ONVIF app itself at `<prefix>/onvif/snapshot/<token>` from
    `snapshot_jpeg(profile)`, behind HTTP Digest (or Basic) authentication like a real camera's.
    """

    name: str
    username: str
    password: str
    profiles: Sequence[VideoProfile]
    rtsp_url: Callable[[VideoProfile, str], str]
    snapshot_jpeg: Callable[[VideoProfile], Awaitable[bytes]]
    snapshot_url: Callable[[VideoProfile, str], str] | None = None
    ptz: PtzModel | None = None
    faults: FaultFlags = field(default_factory=FaultSwitches)
    # Seconds added to the true time to get the camera's clock (a camera whose clock was set wrong); the
    # fault `faults.clock_skew_s` adds to it.
    clock_offset: float = 0.0
    manufacturer: str = "Argus"
    model: str = "SimCam"
    firmware_version: str = "1.0.0"
    serial_number: str = ""
    hardware_id: str = "simcam-1"
    mac_address: str = ""
    location: str = ""
    # Answer GetServices/GetCapabilities/GetServiceCapabilities/GetHostname without authentication, as ONVIF's
    # PRE_AUTH access class allows. Off by default: like many real cameras, only GetSystemDateAndTime is open.
    preauth_discovery: bool = False
    # Accept a plain-text WS-Security password as well as the digest.
    allow_password_text: bool = False
    # Seconds a WS-Security `Created` may differ from the camera clock.
    auth_max_skew: float = 300.0
    # Snapshots need HTTP authentication (Digest or Basic) with the camera's credentials.
    snapshot_auth: bool = True

    def __post_init__(self) -> None:
        if not self.profiles:
            raise ValueError(f"camera {self.name!r} needs at least one profile")
        tokens = [p.token for p in self.profiles]
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"camera {self.name!r}: profile tokens must be unique, got {tokens}")
        digest = hashlib.sha256(self.name.encode()).digest()
        if not self.serial_number:
            self.serial_number = "SIM" + digest[:6].hex().upper()
        if not self.mac_address:
            # A locally administered unicast address, stable per camera name.
            octets = [(digest[0] | 0x02) & 0xFE, *digest[1:6]]
            self.mac_address = ":".join(f"{o:02x}" for o in octets)

    @property
    def endpoint_reference(self) -> str:
        """The device's stable WS-Addressing endpoint (`urn:uuid:...`), as WS-Discovery announces it."""
        return uuid.uuid5(uuid.NAMESPACE_URL, f"argus-simcam:{self.name}").urn

    @property
    def hostname(self) -> str:
        cleaned = "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")
        return cleaned[:63] or "simcam"

    def clock(self, true_time: float) -> float:
        """The camera's clock (epoch seconds) at `true_time`."""
        return true_time + self.clock_offset + self.faults.clock_skew_s

    def profile(self, token: str) -> VideoProfile | None:
        return next((p for p in self.profiles if p.token == token), None)

    def scopes(self) -> list[str]:
        """ONVIF scope URIs, for GetScopes and WS-Discovery."""

        def q(value: str, safe: str = "") -> str:
            return urllib.parse.quote(value, safe=safe)

        scopes = [
            "onvif://www.onvif.org/type/video_encoder",
            "onvif://www.onvif.org/type/Network_Video_Transmitter",
            "onvif://www.onvif.org/Profile/Streaming",
            "onvif://www.onvif.org/Profile/T",
        ]
        if self.ptz is not None:
            scopes.append("onvif://www.onvif.org/type/ptz")
        scopes.append(f"onvif://www.onvif.org/name/{q(self.name)}")
        scopes.append(f"onvif://www.onvif.org/hardware/{q(self.model)}")
        if self.location:
            scopes.append(f"onvif://www.onvif.org/location/{q(self.location, safe='/')}")
        return scopes
