"""The liveview service: live video from the bus to browsers over WebRTC (WHEP), H.264 passed through untouched.

    ingest -> argus.media.{camera}.{stream} (core NATS, published while a live view pod's LiveDemand holds)
           -> FeedHub: one subscription, demand and GOP per watched camera
           -> ViewerQueue per viewer (bounded; a slow viewer skips to the next keyframe)
           -> PassthroughTrack.recv() -> aiortc's RTP packetiser, SRTP -> the viewer's browser

`build_app()` gives the HTTP side (WHEP and the page, behind token auth); `run(config)` wraps it in the runtime:
health, readiness, metrics, and a staged stop: new sessions are refused at once (STOP_INTAKE), open sessions are
closed with their end audited (FINISH_INFLIGHT), then the feeds are unsubscribed (their demands withdrawn) and NATS
drained.
"""

from __future__ import annotations

from aiohttp import web

from argus_core.audit import AuditEmitter
from argus_core.bus import Bus
from argus_core.http import VERIFIER_KEY, auth_middleware, problem_middleware
from argus_core.identity import TokenVerifier
from argus_core.runtime import Runtime, Stage
from argus_liveview import whep
from argus_liveview.config import Config, LiveviewSettings
from argus_liveview.feed import FeedHub
from argus_liveview.ice import IcePolicy
from argus_liveview.metrics import Metrics
from argus_liveview.session import SessionManager

__all__ = ["SERVICE", "Liveview", "build_app", "run"]

SERVICE = "liveview"


class Liveview:
    """The parts of one liveview process, given a bus: feeds, sessions, audit; `pod` names it in its live demands."""

    def __init__(self, bus: Bus, settings: LiveviewSettings, metrics: Metrics, *, pod: str) -> None:
        self.settings = settings
        self.metrics = metrics
        self.audit = AuditEmitter(bus, SERVICE, retry_for_s=settings.audit_timeout_s)
        self.hub = FeedHub(bus, settings, metrics, viewer=pod)
        self.ice = IcePolicy.from_settings(settings)
        self.sessions = SessionManager(self.hub, self.ice, self.audit, metrics, settings)

    def install(self, app: web.Application) -> None:
        app[whep.MANAGER_KEY] = self.sessions
        app[whep.AUDIT_KEY] = self.audit
        app[whep.LINKS_KEY] = whep.ice_links(
            self.settings.ice_servers, self.settings.turn_username, self.settings.turn_password
        )

    async def close(self) -> None:
        """End every session (each end audited), then stop the feeds; may be called twice."""
        await self.sessions.close()
        await self.hub.close()


def build_app(verifier: TokenVerifier) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, auth_middleware], client_max_size=256 * 1024)
    app[VERIFIER_KEY] = verifier
    whep.routes(app)
    return app


async def run(config: Config) -> int:
    app = build_app(TokenVerifier.from_config(config.tokens))
    async with Runtime(SERVICE, config, app=app) as rt:
        bus = await rt.connect_bus()
        liveview = Liveview(bus, config.liveview, Metrics(rt.registry), pod=config.pod_name)
        liveview.install(app)

        async def refuse_new() -> None:
            liveview.sessions.refuse_new()

        rt.on_stop(Stage.STOP_INTAKE, "liveview-intake", refuse_new)
        rt.on_stop(Stage.FINISH_INFLIGHT, "liveview-sessions", liveview.close)
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
