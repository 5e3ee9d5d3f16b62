"""The ONVIF web application of one camera: SOAP dispatch, authentication, faults and the snapshot URL.

`make_onvif_app(camera)` returns an aiohttp application serving the usual paths (`/onvif/device_service`,
`/onvif/media_service`, `/onvif/media2_service`, `/onvif/ptz_service`, `/onvif/snapshot/<token>`). Run it on
a port of its own or mount it under a prefix (`root.add_subapp("/cam1", app)`); service addresses it hands
out are absolute, built from the client's Host header and the mount prefix.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from argus_simcam.onvif.camera import OnvifCamera
from argus_simcam.onvif.context import SNAPSHOT_PATH, Call, Service, ServiceKind, Urls
from argus_simcam.onvif.device import DEVICE_SERVICE, PREAUTH_DISCOVERY_OPERATIONS
from argus_simcam.onvif.httpauth import HttpAuthenticator, HttpAuthResult
from argus_simcam.onvif.media import MEDIA2_SERVICE, MEDIA_SERVICE
from argus_simcam.onvif.ptz_service import PTZ_SERVICE
from argus_simcam.onvif.soap import SOAP_CONTENT_TYPE, Node, SoapFault, SoapRequest, parse_envelope, serialize
from argus_simcam.wsse import AuthError, UsernameTokenVerifier, parse_security_header

__all__ = ["MAX_REQUEST_BYTES", "make_onvif_app"]

_log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 256 * 1024
SERVICES = (DEVICE_SERVICE, MEDIA_SERVICE, MEDIA2_SERVICE, PTZ_SERVICE)
_HOST = re.compile(r"[A-Za-z0-9.\-_]+(:\d{1,5})?|\[[0-9A-Fa-f:.%A-Za-z]+\](:\d{1,5})?")


@dataclass(slots=True)
class _State:
    camera: OnvifCamera
    verifier: UsernameTokenVerifier
    http_auth: HttpAuthenticator
    wall_clock: Callable[[], float]

    def camera_time(self) -> float:
        return self.camera.clock(self.wall_clock())


_STATE = web.AppKey("argus_simcam_onvif_state", _State)


def make_onvif_app(camera: OnvifCamera, *, wall_clock: Callable[[], float] = time.time) -> web.Application:
    """The ONVIF services of `camera`. `wall_clock` (epoch seconds) is the true time; the camera adds its
    `clock_offset` to it."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[_STATE] = _State(
        camera=camera,
        verifier=UsernameTokenVerifier(max_skew=camera.auth_max_skew, allow_password_text=camera.allow_password_text),
        http_auth=HttpAuthenticator(f"{camera.manufacturer} {camera.name}"),
        wall_clock=wall_clock,
    )
    for service in SERVICES:
        app.router.add_post(service.kind.path, _soap_handler(service), name=service.kind.value)
    app.router.add_get(SNAPSHOT_PATH, _handle_snapshot, name="snapshot")
    return app


def _soap_handler(service: Service) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return await _handle_soap(service, request)

    return handle


def _soap_response(body: Node, status: int) -> web.Response:
    return web.Response(body=serialize(body), status=status, headers={hdrs.CONTENT_TYPE: SOAP_CONTENT_TYPE})


def _unavailable() -> web.Response:
    # No body: SOAP clients then report the status instead of failing to parse a page.
    return web.Response(status=503, headers={hdrs.RETRY_AFTER: "30"})


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, size)
        chunks.append(chunk)
    return b"".join(chunks)


def _local_address(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if isinstance(sockname, tuple) and sockname:
        return str(sockname[0])
    return "127.0.0.1"


def _urls(request: web.Request) -> Urls:
    host = request.headers.get(hdrs.HOST, "")
    if not _HOST.fullmatch(host):
        address = _local_address(request)
        host = f"[{address}]" if ":" in address else address
    if host.startswith("["):
        hostname = host[: host.index("]") + 1]
    else:
        hostname = host.partition(":")[0]
    device_path = str(request.app.router[ServiceKind.DEVICE.value].url_for())
    prefix = device_path.removesuffix(ServiceKind.DEVICE.path)
    return Urls(origin=f"{request.scheme}://{host}", host=hostname, prefix=prefix)


def _is_open(camera: OnvifCamera, kind: ServiceKind, operation: str) -> bool:
    """Operations answered without authentication."""
    if kind is not ServiceKind.DEVICE:
        return False
    return operation == "GetSystemDateAndTime" or (
        camera.preauth_discovery and operation in PREAUTH_DISCOVERY_OPERATIONS
    )


def _not_authorized() -> SoapFault:
    return SoapFault("Sender", ("ter:NotAuthorized",), "Sender not Authorized")


def _authenticate(state: _State, soap: SoapRequest, now: float) -> None:
    camera = state.camera
    if camera.faults.refuse_auth:
        _log.info("camera %s: %s not authorized: refusing every credential (fault)", camera.name, soap.operation)
        raise _not_authorized()
    try:
        token = parse_security_header(soap.header)
        state.verifier.verify(token, username=camera.username, password=camera.password, now=now)
    except AuthError as exc:
        _log.info("camera %s: %s not authorized: %s", camera.name, soap.operation, exc)
        raise _not_authorized() from exc


async def _handle_soap(service: Service, request: web.Request) -> web.Response:
    state = request.app[_STATE]
    camera = state.camera
    if camera.faults.rebooting:
        return _unavailable()
    raw = await _read_body(request)
    try:
        soap = parse_envelope(raw)
        operation = service.operation(soap.namespace, soap.operation)
        now = state.camera_time()
        if not _is_open(camera, service.kind, soap.operation):
            _authenticate(state, soap, now)
        call = Call(camera, soap, _urls(request), now, _local_address(request))
        body = operation(call)
    except SoapFault as fault:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("camera %s: %s fault %s: %s", camera.name, service.kind, fault.subcodes, fault.reason)
        return _soap_response(fault.to_node(), fault.http_status)
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("camera %s: %s %s answered", camera.name, service.kind, soap.operation)
    return _soap_response(body, 200)


async def _handle_snapshot(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    camera = state.camera
    if camera.faults.rebooting:
        return _unavailable()
    profile = camera.profile(request.match_info["token"])
    if profile is None:
        raise web.HTTPNotFound(text="no such profile\n")
    if camera.snapshot_auth:
        result = state.http_auth.check(
            request.headers.get(hdrs.AUTHORIZATION),
            method=request.method,
            target=request.raw_path,
            username=camera.username,
            password=camera.password,
        )
        if camera.faults.refuse_auth or result is not HttpAuthResult.OK:
            challenge = state.http_auth.challenge(stale=result is HttpAuthResult.STALE)
            return web.Response(status=401, text="unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: challenge})
    jpeg = await camera.snapshot_jpeg(profile)
    return web.Response(body=jpeg, content_type="image/jpeg", headers={hdrs.CACHE_CONTROL: "no-store"})
