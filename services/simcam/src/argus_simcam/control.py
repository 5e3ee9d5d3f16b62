"""simcam's HTTP control API: list the cameras and set their faults on demand.

    GET    /cameras                      every camera: stream and ONVIF URLs, faults, PTZ position
    GET    /cameras/{id}                 one camera
    PATCH  /cameras/{id}/faults          set faults from a JSON object (see FaultState.update); 400 if invalid
    DELETE /cameras/{id}/faults          clear every fault
    POST   /cameras/{id}/drop            drop every RTSP connection now
    POST   /cameras/{id}/reboot          {"seconds": N}: gone for N seconds (RTSP and ONVIF)
    POST   /cameras/{id}/stall           {"seconds": N}: stop sending, keep the connection

It is a development and test tool: it has no authentication and listens where the runtime's HTTP server does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from argus_core.http import Problem
from argus_simcam.camera import SimCamera
from argus_simcam.faults import FaultError
from argus_simcam.ptz import PtzModel


@dataclass
class Camera:
    id: str
    name: str
    media: SimCamera
    ptz: PtzModel | None
    rtsp: dict[str, str]
    onvif: str
    latitude: float | None
    longitude: float | None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "codec": self.media.codec,
            "mode": self.media.mode,
            "rtsp": self.rtsp,
            "onvif": self.onvif,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "faults": self.media.faults.to_dict(),
            "ptz": None,
        }
        if self.ptz is not None:
            pan, tilt, zoom = self.ptz.view()
            out["ptz"] = {"pan": pan, "tilt": tilt, "zoom": zoom}
        return out


CAMERAS_KEY = web.AppKey("simcam.cameras", dict[str, Camera])


def _camera(request: web.Request) -> Camera:
    camera_id = request.match_info["camera"]
    camera = request.app[CAMERAS_KEY].get(camera_id)
    if camera is None:
        raise Problem(404, "Not Found", f"no camera {camera_id}", camera=camera_id)
    return camera


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise Problem(400, "Bad Request", f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "body must be a JSON object")
    return body


def _seconds(body: dict[str, Any]) -> float:
    value = body.get("seconds")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 3600:
        raise Problem(400, "Bad Request", "seconds must be a number in (0, 3600]")
    return float(value)


async def list_cameras(request: web.Request) -> web.Response:
    return web.json_response({"cameras": [c.describe() for c in request.app[CAMERAS_KEY].values()]})


async def get_camera(request: web.Request) -> web.Response:
    return web.json_response(_camera(request).describe())


async def set_faults(request: web.Request) -> web.Response:
    camera = _camera(request)
    body = await _json_object(request)
    try:
        camera.media.faults.update(body)
    except FaultError as exc:
        raise Problem(400, "Bad Request", str(exc), fault=exc.key) from exc
    return web.json_response(camera.media.faults.to_dict())


async def clear_faults(request: web.Request) -> web.Response:
    camera = _camera(request)
    camera.media.faults.clear()
    return web.json_response(camera.media.faults.to_dict())


async def drop(request: web.Request) -> web.Response:
    camera = _camera(request)
    camera.media.faults.drop_connections()
    return web.json_response({"dropped": True})


async def reboot(request: web.Request) -> web.Response:
    camera = _camera(request)
    camera.media.faults.reboot(_seconds(await _json_object(request)))
    return web.json_response(camera.media.faults.to_dict())


async def stall(request: web.Request) -> web.Response:
    camera = _camera(request)
    camera.media.faults.stall_for(_seconds(await _json_object(request)))
    return web.json_response(camera.media.faults.to_dict())


def routes(app: web.Application) -> None:
    app.router.add_get("/cameras", list_cameras)
    app.router.add_get("/cameras/{camera}", get_camera)
    app.router.add_patch("/cameras/{camera}/faults", set_faults)
    app.router.add_delete("/cameras/{camera}/faults", clear_faults)
    app.router.add_post("/cameras/{camera}/drop", drop)
    app.router.add_post("/cameras/{camera}/reboot", reboot)
    app.router.add_post("/cameras/{camera}/stall", stall)
