"""The pieces every ONVIF operation handler gets: the camera, the request, and where the services live."""

from __future__ import annotations

import datetime as dt
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from argus_simcam.onvif.camera import OnvifCamera, VideoProfile
from argus_simcam.onvif.soap import NS, Node, SoapFault, SoapRequest, invalid_arg, require_text

__all__ = ["SNAPSHOT_PATH", "Call", "Operation", "Service", "ServiceKind", "Urls"]


class ServiceKind(StrEnum):
    DEVICE = "device"
    MEDIA = "media"
    MEDIA2 = "media2"
    PTZ = "ptz"

    @property
    def namespace(self) -> str:
        return NS[_PREFIX[self]]

    @property
    def prefix(self) -> str:
        return _PREFIX[self]

    @property
    def path(self) -> str:
        return f"/onvif/{self.value}_service"


_PREFIX = {
    ServiceKind.DEVICE: "tds",
    ServiceKind.MEDIA: "trt",
    ServiceKind.MEDIA2: "tr2",
    ServiceKind.PTZ: "tptz",
}


SNAPSHOT_PATH = "/onvif/snapshot/{token}"


@dataclass(frozen=True, slots=True)
class Urls:
    """Absolute URLs as the client sees them: its Host header plus the prefix the app is mounted at."""

    origin: str  # scheme://host[:port]
    host: str  # the host part alone (IPv6 in brackets), for RTSP URLs
    prefix: str  # where the app is mounted ("" or "/cam1")

    def xaddr(self, kind: ServiceKind) -> str:
        return self.origin + self.prefix + kind.path

    def snapshot(self, token: str) -> str:
        return self.origin + self.prefix + SNAPSHOT_PATH.format(token=urllib.parse.quote(token, safe=""))


@dataclass(frozen=True, slots=True)
class Call:
    camera: OnvifCamera
    request: SoapRequest
    urls: Urls
    camera_time: float  # epoch seconds on the camera's (possibly skewed) clock
    local_address: str  # the address the request arrived on

    @property
    def args(self) -> ET.Element:
        """The operation element of the request, holding its arguments."""
        return self.request.body

    def camera_datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.camera_time, dt.UTC)

    def profile_arg(self, element: str = "ProfileToken") -> VideoProfile:
        """The profile named by the request's `element`; ter:NoProfile if there is none such."""
        token = require_text(self.args, element)
        profile = self.camera.profile(token)
        if profile is None:
            raise invalid_arg("NoProfile", f"no profile with token {token!r}")
        return profile

    def snapshot_url(self, profile: VideoProfile) -> str:
        if self.camera.snapshot_url is not None:
            return self.camera.snapshot_url(profile, self.urls.host)
        return self.urls.snapshot(profile.token)


Operation = Callable[[Call], Node]


@dataclass(frozen=True, slots=True)
class Service:
    kind: ServiceKind
    operations: Mapping[str, Operation]

    def operation(self, call_namespace: str, name: str) -> Operation:
        op = self.operations.get(name) if call_namespace == self.kind.namespace else None
        if op is None:
            raise SoapFault(
                "Receiver",
                ("ter:ActionNotSupported",),
                f"the {self.kind.value} service does not support {{{call_namespace}}}{name}",
            )
        return op
