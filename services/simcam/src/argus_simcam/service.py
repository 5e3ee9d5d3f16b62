"""simcam: many simulated IP cameras in one process, for development, demos and tests (never production).

Each camera of the fleet serves RTSP (main and sub stream) on the shared RTSP port at `/<id>/main` and `/<id>/sub`,
ONVIF under `/<id>/onvif/...` on the HTTP port (and, with `ARGUS_ONVIF_PORT_BASE`, on a port of its own, which is
what clients such as Home Assistant's need), a JPEG snapshot, and faults on demand through the control API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from argus_core.errors import ConfigError
from argus_core.http import problem_middleware
from argus_core.runtime import Runtime, Stage
from argus_simcam import control, fleet
from argus_simcam.camera import MediaHub, SimCamera
from argus_simcam.config import Config
from argus_simcam.discovery import DiscoveryResponder, DiscoveryTarget
from argus_simcam.faults import FaultError, FaultState
from argus_simcam.onvif import OnvifCamera, VideoCodec, VideoProfile, make_onvif_app
from argus_simcam.ptz import PtzModel
from argus_simcam.rtsp import RtspServer
from argus_simcam.scene import ViewWindow
from argus_simcam.snapshot import Snapshotter
from argus_simcam.stream import StreamSpec

SERVICE = "simcam"
log = logging.getLogger(__name__)


@dataclass
class Built:
    camera: control.Camera
    onvif: OnvifCamera
    onvif_app: web.Application


def _host_only(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def build_camera(settings: fleet.CameraSettings, config: Config, hub: MediaHub, onvif_port: int) -> Built:
    faults = FaultState()
    try:
        faults.update(settings.faults)
    except FaultError as exc:
        raise ConfigError("ARGUS_FLEET_FILE", f"camera {settings.id}: {exc}") from exc
    ptz = PtzModel() if settings.ptz else None

    def view() -> ViewWindow:
        return ViewWindow(*ptz.view()) if ptz is not None else ViewWindow()

    main = StreamSpec(settings.main.width, settings.main.height, settings.main.fps, settings.main.bitrate)
    sub = (
        StreamSpec(settings.sub.width, settings.sub.height, settings.sub.fps, settings.sub.bitrate)
        if settings.sub is not None
        else None
    )
    media = SimCamera(
        settings.id,
        settings.codec,
        main,
        sub,
        settings.mode,
        (config.username, config.password),
        view,
        faults,
        hub=hub,
    )
    snapshots = Snapshotter(hub, settings.title, view, faults)
    codec = VideoCodec.H264 if settings.codec == "h264" else VideoCodec.H265
    profiles = [
        VideoProfile(
            token=name,
            name=f"{settings.title} {name}",
            width=spec.width,
            height=spec.height,
            codec=codec,
            fps=spec.fps,
            bitrate_kbps=spec.bitrate // 1000,
            gov_length=spec.gop,
            codec_profile="High" if settings.codec == "h264" else "Main",
        )
        for name, spec in media.specs.items()
    ]

    def rtsp_url(profile: VideoProfile, host: str) -> str:
        return f"rtsp://{_host_only(host) or config.advertise_host}:{config.rtsp_port}/{settings.id}/{profile.token}"

    async def snapshot(profile: VideoProfile) -> bytes:
        return await snapshots.jpeg(profile.width, profile.height)

    onvif = OnvifCamera(
        name=settings.title,
        username=config.username,
        password=config.password,
        profiles=profiles,
        rtsp_url=rtsp_url,
        snapshot_jpeg=snapshot,
        ptz=ptz,
        faults=faults,
        serial_number=settings.id,
        hardware_id=settings.id,
        location=f"{settings.latitude},{settings.longitude}" if settings.latitude is not None else "",
    )
    base = f"http://{config.advertise_host}:{onvif_port or config.http_port}"
    prefix = "" if onvif_port else f"/{settings.id}"
    camera = control.Camera(
        id=settings.id,
        name=settings.title,
        media=media,
        ptz=ptz,
        rtsp={s: f"rtsp://{config.advertise_host}:{config.rtsp_port}/{settings.id}/{s}" for s in media.specs},
        onvif=f"{base}{prefix}/onvif/device_service",
        latitude=settings.latitude,
        longitude=settings.longitude,
    )
    return Built(camera, onvif, make_onvif_app(onvif))


async def run(config: Config) -> int:
    try:
        cameras = fleet.from_config(config)
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc, extra={"variable": exc.variable})  # noqa: TRY400
        return 2
    hub = MediaHub()
    built: list[Built] = []
    try:
        for index, settings in enumerate(cameras):
            port = config.onvif_port_base + index if config.onvif_port_base else 0
            built.append(build_camera(settings, config, hub, port))
    except ConfigError as exc:
        await hub.close()
        log.error("invalid configuration: %s", exc, extra={"variable": exc.variable})  # noqa: TRY400
        return 2

    app = web.Application(middlewares=[problem_middleware])
    app[control.CAMERAS_KEY] = {b.camera.id: b.camera for b in built}
    control.routes(app)
    if not config.onvif_port_base:
        for b in built:
            app.add_subapp(f"/{b.camera.id}", b.onvif_app)

    async with Runtime(SERVICE, config, app=app) as rt:
        rt.on_stop(Stage.CLOSE, "media hub", hub.close)
        for b in built:
            rt.on_stop(Stage.CLOSE, f"camera {b.camera.id}", b.camera.media.close)
            await b.camera.media.start()
        rtsp = RtspServer(config.rtsp_host, config.rtsp_port, {b.camera.id: b.camera.media for b in built})
        await rtsp.start()
        rt.on_stop(Stage.STOP_INTAKE, "rtsp", rtsp.close)
        if config.onvif_port_base:
            for b in built:
                runner = web.AppRunner(b.onvif_app, access_log=None)
                await runner.setup()
                port = int(b.camera.onvif.rsplit(":", 1)[1].split("/", 1)[0])
                await web.TCPSite(runner, config.http_host, port).start()
                rt.on_stop(Stage.STOP_INTAKE, f"onvif {b.camera.id}", runner.cleanup)
        if config.discovery_port:
            targets = [DiscoveryTarget.for_camera(b.onvif, [b.camera.onvif]) for b in built]
            responder = DiscoveryResponder(lambda: targets, host=config.http_host, port=config.discovery_port)
            await responder.start()
            rt.on_stop(Stage.STOP_INTAKE, "discovery", responder.close)
        log.info(
            "simcam: %d cameras, RTSP on %s:%d, control API on :%d",
            len(built),
            config.rtsp_host,
            rtsp.port,
            rt.http_port,
            extra={"cameras": [b.camera.id for b in built]},
        )
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
