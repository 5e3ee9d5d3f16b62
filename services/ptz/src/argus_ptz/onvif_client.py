"""ONVIF PTZ of one camera with onvif-zeep-async: lazy connection, capability discovery, timeouts and errors.

`OnvifPtz` connects on first use: it finds the device's services (GetServices), the first media profile with a PTZ
configuration, that configuration's node (spaces, ranges, preset limit, home support) and options (timeouts). Every
request then names the generic space whose range was read, so what this module validates is what the camera checks.

The WSDL documents are parsed once per process, off the event loop, by onvif-zeep-async itself; requests are built
and parsed by zeep on the loop (a fraction of a millisecond). Each request is bounded by `timeout_s`; faults,
timeouts, refused connections and HTTP errors become the `OnvifError` subclasses of `argus_ptz.errors`, worded
without the camera's credentials.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import onvif
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError

from argus_core.bus import messages as m
from argus_ptz.errors import (
    NoPtz,
    NotFound,
    OnvifAuthError,
    OnvifError,
    OnvifFault,
    OnvifTimeout,
    OnvifUnreachable,
    PtzError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

WSDL_DIR = str(Path(onvif.__file__).parent / "wsdl")
PTZ_NAMESPACE = "http://www.onvif.org/ver20/ptz/wsdl"
MEDIA_NAMESPACE = "http://www.onvif.org/ver10/media/wsdl"
_GENERIC = "http://www.onvif.org/ver10/tptz/"
_NOT_SUPPORTED = frozenset({"ActionNotSupported", "PTZNotSupported", "NoPTZProfile"})


def redact_url(url: str) -> str:
    """`url` without user information, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class CameraRecord:
    """What the register says about reaching one camera's ONVIF services."""

    id: str
    onvif_url: str
    username: str = ""
    password: str = field(default="", repr=False)
    has_ptz: bool = True
    enabled: bool = True

    @property
    def safe_url(self) -> str:
        return redact_url(self.onvif_url)


@dataclass(frozen=True)
class Status:
    pan: float | None
    tilt: float | None
    zoom: float | None
    moving: bool


@dataclass(frozen=True)
class Capabilities:
    """A camera's PTZ node as discovered; `ranges` as in `PtzCapabilities`, `spaces` the URI of each."""

    profile: str
    node: str
    max_presets: int
    home_supported: bool
    ranges: dict[str, m.PtzRange]
    spaces: dict[str, str]

    def to_message(self) -> m.PtzCapabilities:
        return m.PtzCapabilities(
            node=self.node,
            profile=self.profile,
            max_presets=self.max_presets,
            home_supported=self.home_supported,
            ranges=dict(self.ranges),
        )


class _Device(ONVIFCamera):  # type: ignore[misc]  # onvif-zeep-async is untyped
    """ONVIFCamera whose device service lives at the register's URL (a path other than /onvif/device_service is
    common behind gateways and in simcam's fleet)."""

    def __init__(self, device_url: str, user: str, password: str) -> None:
        parts = urllib.parse.urlsplit(device_url)
        default_port = 443 if parts.scheme == "https" else 80
        host = parts.hostname or ""
        base = f"{parts.scheme}://{host}" if parts.scheme == "https" else host
        super().__init__(base, parts.port or default_port, user, password, WSDL_DIR, no_cache=True)
        self._device_url = device_url

    def get_definition(self, name: str, port_type: str | None = None) -> tuple[str, str, str]:
        xaddr, wsdl, binding = super().get_definition(name, port_type)
        if name == "devicemgmt":
            xaddr = self._device_url
        return str(xaddr), str(wsdl), str(binding)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _range(node: Any) -> m.PtzRange | None:
    if node is None:
        return None
    low, high = _num(getattr(node, "Min", None)), _num(getattr(node, "Max", None))
    if low is None or high is None or low > high:
        return None
    return m.PtzRange(min=low, max=high)


def _pick_space(spaces: Any, name: str) -> Any:
    """The generic space of a kind (for example AbsolutePanTiltPositionSpace) if listed, else the first one."""
    listed = list(getattr(spaces, name, None) or [])
    for space in listed:
        if str(getattr(space, "URI", "")).startswith(_GENERIC):
            return space
    return listed[0] if listed else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return _num(value)


def _narrow(outer: m.PtzRange | None, inner: m.PtzRange | None) -> m.PtzRange | None:
    if outer is None or inner is None:
        return outer or inner
    low, high = max(outer.min, inner.min), min(outer.max, inner.max)
    return m.PtzRange(min=low, max=high) if low <= high else outer


def parse_capabilities(profile: str, configuration: Any, node: Any, options: Any) -> Capabilities:
    """Ranges and spaces from GetNode and GetConfigurationOptions, narrowed by the configuration's limits."""
    spaces = getattr(node, "SupportedPTZSpaces", None)
    ranges: dict[str, m.PtzRange] = {}
    uris: dict[str, str] = {}

    def take(kind: str, x_name: str, y_name: str | None) -> None:
        space = _pick_space(spaces, kind)
        if space is None:
            return
        uris[kind] = str(getattr(space, "URI", ""))
        x = _range(getattr(space, "XRange", None))
        if x is not None:
            ranges[x_name] = x
        if y_name is not None:
            y = _range(getattr(space, "YRange", None))
            if y is not None:
                ranges[y_name] = y

    take("AbsolutePanTiltPositionSpace", "pan", "tilt")
    take("AbsoluteZoomPositionSpace", "zoom", None)
    take("RelativePanTiltTranslationSpace", "pan_translation", "tilt_translation")
    take("RelativeZoomTranslationSpace", "zoom_translation", None)
    take("ContinuousPanTiltVelocitySpace", "pan_velocity", "tilt_velocity")
    take("ContinuousZoomVelocitySpace", "zoom_velocity", None)
    take("PanTiltSpeedSpace", "speed", None)
    take("ZoomSpeedSpace", "zoom_speed", None)

    pan_tilt_limits = getattr(getattr(configuration, "PanTiltLimits", None), "Range", None)
    if pan_tilt_limits is not None and str(getattr(pan_tilt_limits, "URI", "")) == uris.get(
        "AbsolutePanTiltPositionSpace"
    ):
        ranges["pan"] = _narrow(ranges.get("pan"), _range(getattr(pan_tilt_limits, "XRange", None))) or ranges["pan"]
        ranges["tilt"] = _narrow(ranges.get("tilt"), _range(getattr(pan_tilt_limits, "YRange", None))) or ranges["tilt"]
    zoom_limits = getattr(getattr(configuration, "ZoomLimits", None), "Range", None)
    if zoom_limits is not None and str(getattr(zoom_limits, "URI", "")) == uris.get("AbsoluteZoomPositionSpace"):
        ranges["zoom"] = _narrow(ranges.get("zoom"), _range(getattr(zoom_limits, "XRange", None))) or ranges["zoom"]

    timeout = getattr(options, "PTZTimeout", None)
    low, high = _seconds(getattr(timeout, "Min", None)), _seconds(getattr(timeout, "Max", None))
    if low is not None and high is not None and low <= high:
        ranges["timeout_s"] = m.PtzRange(min=low, max=high)

    return Capabilities(
        profile=profile,
        node=str(getattr(node, "token", "") or ""),
        max_presets=int(getattr(node, "MaximumNumberOfPresets", 0) or 0),
        home_supported=bool(getattr(node, "HomeSupported", False)),
        ranges=ranges,
        spaces=uris,
    )


def _subcodes(fault: zeep.exceptions.Fault) -> tuple[str, ...]:
    out: list[str] = []
    for code in fault.subcodes or ():
        name = getattr(code, "localname", None) or str(code).rpartition("}")[2].rpartition(":")[2]
        out.append(str(name))
    return tuple(out)


def _duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


class OnvifPtz:
    """The PTZ service of one camera. `connect()` is idempotent; every other call connects first if needed."""

    def __init__(self, record: CameraRecord, *, timeout_s: float) -> None:
        self.record = record
        self._timeout = timeout_s
        self._device: _Device | None = None
        self._ptz: Any = None
        self._caps: Capabilities | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def camera(self) -> str:
        return self.record.id

    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            raise RuntimeError("not connected")
        return self._caps

    async def connect(self) -> Capabilities:
        if self._caps is not None:
            return self._caps
        async with self._lock:
            return await self._connect_locked()

    async def _connect_locked(self) -> Capabilities:
        if self._caps is None:
            if self._closed:
                raise OnvifUnreachable(f"camera {self.camera}: client closed")
            device = _Device(self.record.onvif_url, self.record.username, self.record.password)
            try:
                caps, ptz = await self._discover(device)
            except BaseException:
                await device.close()
                raise
            self._device, self._ptz, self._caps = device, ptz, caps
            log.info(
                "camera %s: ONVIF PTZ at %s, profile %s, node %s, %d presets at most",
                self.camera,
                self.record.safe_url,
                caps.profile,
                caps.node,
                caps.max_presets,
                extra={"camera": self.camera},
            )
        return self._caps

    async def _discover(self, device: _Device) -> tuple[Capabilities, Any]:
        await self._call("GetServices", device.update_xaddrs)
        if PTZ_NAMESPACE not in device.xaddrs:
            raise NoPtz(self.camera, "offers no ONVIF PTZ service")
        if MEDIA_NAMESPACE not in device.xaddrs:
            raise NoPtz(self.camera, "offers no ONVIF media service to find its PTZ profile")
        media = await self._call("media service", device.create_media_service)
        ptz = await self._call("PTZ service", device.create_ptz_service)
        profiles = await self._call("GetProfiles", media.GetProfiles)
        chosen = next((p for p in profiles or () if getattr(p, "PTZConfiguration", None) is not None), None)
        if chosen is None:
            raise NoPtz(self.camera, "has no media profile with a PTZ configuration")
        configuration = chosen.PTZConfiguration
        node = await self._call("GetNode", lambda: ptz.GetNode({"NodeToken": configuration.NodeToken}))
        try:
            options = await self._call(
                "GetConfigurationOptions",
                lambda: ptz.GetConfigurationOptions({"ConfigurationToken": configuration.token}),
            )
        except OnvifFault:
            options = None  # optional: only the timeout range comes from it
        return parse_capabilities(str(chosen.token), configuration, node, options), ptz

    async def _call(self, operation: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one ONVIF request within the timeout and turn every failure into an `OnvifError`."""
        where = f"camera {self.camera}: {operation}"
        try:
            async with asyncio.timeout(self._timeout):
                return await request()
        except TimeoutError as exc:
            raise OnvifTimeout(f"{where}: no answer within {self._timeout:g} s") from exc
        except zeep.exceptions.Fault as exc:
            subcodes = _subcodes(exc)
            reason = str(exc.message or "")
            if "NotAuthorized" in subcodes:
                raise OnvifAuthError(f"{where}: the camera refused the register's credentials") from exc
            if _NOT_SUPPORTED.intersection(subcodes):
                raise NoPtz(self.camera, f"refused {operation}: {reason}") from exc
            if "NoToken" in subcodes or "NoEntity" in subcodes:
                raise NotFound(f"{where}: {reason}") from exc
            raise OnvifFault(operation, subcodes, reason) from exc
        except ONVIFAuthError as exc:
            raise OnvifAuthError(f"{where}: authentication failed") from exc
        except ONVIFTimeoutError as exc:
            raise OnvifTimeout(f"{where}: timed out") from exc
        except zeep.exceptions.TransportError as exc:
            if exc.status_code in (401, 403):
                raise OnvifAuthError(f"{where}: HTTP {exc.status_code}") from exc
            raise OnvifUnreachable(f"{where}: HTTP {exc.status_code} without a SOAP answer") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise OnvifUnreachable(f"{where}: {type(exc).__name__}: {exc}") from exc
        except ONVIFError as exc:
            cause = exc.__cause__
            if isinstance(cause, (aiohttp.ClientError, OSError)):
                raise OnvifUnreachable(f"{where}: {type(cause).__name__}") from exc
            raise OnvifError(f"{where}: {exc.reason}") from exc
        except zeep.exceptions.Error as exc:
            raise OnvifError(f"{where}: {type(exc).__name__}: {exc}") from exc

    async def _ptz_call(self, operation: str, params: dict[str, Any]) -> Any:
        caps = await self.connect()
        ptz = self._ptz
        return await self._call(operation, lambda: getattr(ptz, operation)({"ProfileToken": caps.profile, **params}))

    # --- vectors in the spaces the ranges came from -----------------------------------------------------------

    def _pan_tilt(self, kind: str, x: float, y: float) -> dict[str, Any]:
        vector: dict[str, Any] = {"x": x, "y": y}
        space = self.capabilities.spaces.get(kind)
        if space:
            vector["space"] = space
        return vector

    def _zoom(self, kind: str, x: float) -> dict[str, Any]:
        vector: dict[str, Any] = {"x": x}
        space = self.capabilities.spaces.get(kind)
        if space:
            vector["space"] = space
        return vector

    def _speed(self, speed: float | None) -> dict[str, Any]:
        if speed is None:
            return {}
        return {
            "Speed": {
                "PanTilt": self._pan_tilt("PanTiltSpeedSpace", speed, speed),
                "Zoom": self._zoom("ZoomSpeedSpace", speed),
            }
        }

    # --- operations -------------------------------------------------------------------------------------------

    async def continuous_move(self, pan: float, tilt: float, zoom: float, timeout_s: float) -> None:
        await self.connect()
        velocity = {
            "PanTilt": self._pan_tilt("ContinuousPanTiltVelocitySpace", pan, tilt),
            "Zoom": self._zoom("ContinuousZoomVelocitySpace", zoom),
        }
        await self._ptz_call("ContinuousMove", {"Velocity": velocity, "Timeout": _duration(timeout_s)})

    async def absolute_move(
        self, pan: float | None, tilt: float | None, zoom: float | None, speed: float | None
    ) -> None:
        await self.connect()
        if (pan is None) != (tilt is None):
            here = await self.status()
            pan = here.pan if pan is None else pan
            tilt = here.tilt if tilt is None else tilt
        position: dict[str, Any] = {}
        if pan is not None and tilt is not None:
            position["PanTilt"] = self._pan_tilt("AbsolutePanTiltPositionSpace", pan, tilt)
        if zoom is not None:
            position["Zoom"] = self._zoom("AbsoluteZoomPositionSpace", zoom)
        await self._ptz_call("AbsoluteMove", {"Position": position, **self._speed(speed)})

    async def relative_move(self, pan: float, tilt: float, zoom: float, speed: float | None) -> None:
        await self.connect()
        translation: dict[str, Any] = {}
        if pan or tilt:
            translation["PanTilt"] = self._pan_tilt("RelativePanTiltTranslationSpace", pan, tilt)
        if zoom:
            translation["Zoom"] = self._zoom("RelativeZoomTranslationSpace", zoom)
        if not translation:
            return
        await self._ptz_call("RelativeMove", {"Translation": translation, **self._speed(speed)})

    async def stop(self, *, pan_tilt: bool = True, zoom: bool = True) -> None:
        await self._ptz_call("Stop", {"PanTilt": pan_tilt, "Zoom": zoom})

    async def status(self) -> Status:
        result = await self._ptz_call("GetStatus", {})
        position = getattr(result, "Position", None)
        pan_tilt = getattr(position, "PanTilt", None)
        zoom = getattr(position, "Zoom", None)
        move = getattr(result, "MoveStatus", None)
        moving = any(str(getattr(move, axis, "") or "").upper() == "MOVING" for axis in ("PanTilt", "Zoom"))
        return Status(
            pan=_num(getattr(pan_tilt, "x", None)),
            tilt=_num(getattr(pan_tilt, "y", None)),
            zoom=_num(getattr(zoom, "x", None)),
            moving=moving,
        )

    async def presets(self) -> dict[str, str]:
        result = await self._ptz_call("GetPresets", {})
        return {str(p.token): str(getattr(p, "Name", "") or "") for p in result or ()}

    async def set_preset(self, name: str, token: str | None) -> str:
        params: dict[str, Any] = {"PresetName": name}
        if token is not None:
            params["PresetToken"] = token
        return str(await self._ptz_call("SetPreset", params))

    async def goto_preset(self, token: str, speed: float | None) -> None:
        await self.connect()
        await self._ptz_call("GotoPreset", {"PresetToken": token, **self._speed(speed)})

    async def remove_preset(self, token: str) -> None:
        await self._ptz_call("RemovePreset", {"PresetToken": token})

    async def goto_home(self, speed: float | None) -> None:
        await self.connect()
        await self._ptz_call("GotoHomePosition", self._speed(speed))

    async def set_home(self) -> None:
        await self._ptz_call("SetHomePosition", {})

    async def close(self) -> None:
        self._closed = True
        device, self._device, self._ptz, self._caps = self._device, None, None, None
        if device is not None:
            await device.close()


class OnvifPool:
    """One `OnvifPtz` per camera, created on first use and kept; replaced when the register's record changes."""

    def __init__(self, lookup: Callable[[str], Awaitable[CameraRecord]], *, timeout_s: float) -> None:
        self._lookup = lookup
        self._timeout = timeout_s
        self._clients: dict[str, OnvifPtz] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._motion: dict[str, asyncio.Lock] = {}
        self._closed = False

    def motion_lock(self, camera: str) -> asyncio.Lock:
        """Held while this pod decides on and sends a motion request to `camera`, so that a stop for a lapsed
        keep-alive never lands after the keep-alive that renewed the move."""
        return self._motion.setdefault(camera, asyncio.Lock())

    async def get(self, camera: str) -> OnvifPtz:
        """A connected client; `UnknownCamera`, `NoPtz` or an `OnvifError` if there cannot be one."""
        record = await self._lookup(camera)
        client = self._clients.get(camera)
        if client is not None and client.record == record:
            await client.connect()
            return client
        lock = self._locks.setdefault(camera, asyncio.Lock())
        async with lock:
            client = self._clients.get(camera)
            if client is None or client.record != record:
                if self._closed:
                    raise OnvifUnreachable("the ptz service is stopping")
                if client is not None:
                    await self.drop(camera)
                client = OnvifPtz(record, timeout_s=self._timeout)
                try:
                    await client.connect()
                except PtzError:
                    await client.close()
                    raise
                self._clients[camera] = client
            return client

    async def drop(self, camera: str) -> None:
        """Forget a camera's client (its register row changed, or it stopped answering): the next use rediscovers."""
        client = self._clients.pop(camera, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
