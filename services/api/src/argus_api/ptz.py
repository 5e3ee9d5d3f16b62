"""PTZ over HTTP: each request becomes a `PtzCommand` on the bus, answered by a ptz pod with a `PtzResult`.

    POST /api/v1/cameras/{camera}/ptz/{action}   body: the action's fields as JSON (may be empty)
    GET  /api/v1/cameras/{camera}/ptz/{read}     read: status, presets, capabilities, tours

`action` is a PTZ action's wire name (`continuous`, `absolute`, `relative`, `stop`, `goto_preset`, `set_preset`,
`remove_preset`, `goto_home`, `set_home`, `release`, `tour_start`, `tour_stop`, and the reads), for example
`POST .../ptz/continuous {"pan": 0.5, "timeout_s": 1}`. Moving the camera and reading its state need the `ptz`
grant on the camera; defining tours and parking (`tour_save`, `tour_delete`, `park_set`) need `configure`. The
caller's priority is that of their highest role; the ptz service arbitrates. A success is the `PtzResult` as JSON
(200); a refusal or failure is problem+json with the result's `error` code and, where they apply, `holder` and
`lease_until` (409 refused), or `argument`, `valid_min`, `valid_max` (422 out of range).

The api registers these with `ptz.routes(app)`; the handlers use the bus in `app[ptz.BUS_KEY]` if set, else the
runtime's bus.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import nats.errors
from aiohttp import web

from argus_core.bus import Bus, DecodeError
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.http import Problem, require
from argus_core.identity import Action
from argus_core.runtime import RUNTIME_KEY

BUS_KEY = web.AppKey("argus.api.ptz_bus", Bus)
REPLY_TIMEOUT_S = 15.0  # above the ptz service's ONVIF timeout, so a slow camera is reported by the service

_ACTIONS: dict[str, type[msgspec.Struct]] = {
    str(tp.__struct_config__.tag): tp
    for tp in typing.get_args(m.PtzAction)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct)
}
_READS = frozenset({"status", "presets", "capabilities", "tours"})
_CONFIGURE = frozenset({"tour_save", "tour_delete", "park_set"})

_STATUS = {
    "refused": (409, "Conflict"),
    "bad_request": (422, "Unprocessable Content"),
    "out_of_range": (422, "Unprocessable Content"),
    "no_ptz": (422, "Unprocessable Content"),
    "unknown_camera": (404, "Not Found"),
    "not_found": (404, "Not Found"),
    "busy": (429, "Too Many Requests"),
    "unavailable": (503, "Service Unavailable"),
    "onvif_timeout": (504, "Gateway Timeout"),
}


def _bus(request: web.Request) -> Bus:
    bus = request.app.get(BUS_KEY)
    if bus is None:
        runtime = request.app.get(RUNTIME_KEY)
        bus = runtime.bus if runtime is not None else None
    if bus is None:
        raise Problem(503, "Service Unavailable", "the api is not connected to the bus")
    return bus


def _camera(request: web.Request) -> str:
    camera = request.match_info["camera"]
    try:
        msgspec.convert(camera, m.CameraId)
    except msgspec.ValidationError:
        raise Problem(404, "Not Found", f"{camera!r} is not a camera id", camera=camera) from None
    return camera


def _action(name: str, body: bytes) -> m.PtzAction:
    tp = _ACTIONS.get(name)
    if tp is None:
        raise Problem(404, "Not Found", f"no PTZ action {name!r}", actions=sorted(_ACTIONS))
    try:
        fields = msgspec.json.decode(body or b"{}", type=dict[str, Any])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Problem(400, "Bad Request", f"the body must be a JSON object: {exc}") from exc
    fields.pop("type", None)
    try:
        action: m.PtzAction = msgspec.convert(fields, tp)  # type: ignore[assignment]
    except msgspec.ValidationError as exc:
        raise Problem(422, "Unprocessable Content", f"{name}: {exc}", error="bad_request") from exc
    return action


def _problem(result: m.PtzResult) -> Problem:
    status, title = _STATUS.get(result.error, (502, "Bad Gateway"))
    extra: dict[str, Any] = {"error": result.error, "camera": result.camera}
    if result.holder:
        extra["holder"] = result.holder
        extra["lease_until_ns"] = result.lease_until_ns
    if result.argument:
        extra.update(argument=result.argument, valid_min=result.valid_min, valid_max=result.valid_max)
    return Problem(status, title, result.detail, **extra)


async def _send(request: web.Request, camera: str, name: str, action: m.PtzAction) -> web.Response:
    needed: Action = "configure" if name in _CONFIGURE else "ptz"
    identity = require(request, needed, camera)
    command = m.PtzCommand(
        camera=camera,
        actor=m.Actor(subject=identity.subject, roles=identity.roles, client=request.remote or ""),
        action=action,
        priority=identity.priority,
    )
    try:
        result = await _bus(request).request(
            s.PTZ_COMMAND, command, s.PTZ_RESULT, reply_timeout_s=REPLY_TIMEOUT_S, camera=camera
        )
    except nats.errors.NoRespondersError as exc:
        raise Problem(503, "Service Unavailable", "no ptz service is running") from exc
    except nats.errors.TimeoutError as exc:
        raise Problem(504, "Gateway Timeout", "the ptz service did not answer in time") from exc
    except DecodeError as exc:
        raise Problem(502, "Bad Gateway", f"the ptz service answered something unreadable: {exc.problem}") from exc
    if not result.ok:
        raise _problem(result)
    return web.json_response(msgspec.to_builtins(result))


async def command(request: web.Request) -> web.Response:
    camera = _camera(request)
    name = request.match_info["action"]
    action = _action(name, await request.read())
    return await _send(request, camera, name, action)


async def read(request: web.Request) -> web.Response:
    camera = _camera(request)
    name = request.match_info["action"]
    if name not in _READS:
        raise Problem(405, "Method Not Allowed", f"{name} changes the camera: use POST", allowed=sorted(_READS))
    return await _send(request, camera, name, _action(name, b""))


def routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/cameras/{camera}/ptz/{action}", command)
    app.router.add_get("/api/v1/cameras/{camera}/ptz/{action}", read)
