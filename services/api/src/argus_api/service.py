"""The api service: the REST API and the control-room console.

Every route but health and the console's static page needs a bearer token signed by the issuer; the api holds the
issuer's private key (`ARGUS_TOKENS_PRIVATE_KEY`), and with it `python -m argus_api token` signs tokens for the
local stack and for scripts until sign-in (OIDC, local accounts with MFA) lands.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from argus_api import audit, cameras, playback, ptz, retention
from argus_api.config import Config
from argus_core.audit import AuditEmitter, CheckpointKeys
from argus_core.http import VERIFIER_KEY, auth_middleware, problem_middleware, public_route
from argus_core.identity import TokenVerifier
from argus_core.runtime import Runtime

SERVICE = "api"


@public_route
async def console(request: web.Request) -> web.Response:
    page = resources.files("argus_api").joinpath("static/index.html").read_text()
    return web.Response(text=page, content_type="text/html")


def build_app(verifier: TokenVerifier) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, auth_middleware])
    app[VERIFIER_KEY] = verifier
    app.router.add_get("/", console)
    cameras.routes(app)
    ptz.routes(app)
    audit.routes(app)
    retention.routes(app)
    playback.routes(app)
    return app


async def run(config: Config) -> int:
    app = build_app(TokenVerifier.from_config(config.tokens))
    async with Runtime(SERVICE, config, app=app) as rt:
        bus = await rt.connect_bus()
        app[cameras.POOL_KEY] = await rt.open_db(config.db)
        store = await rt.open_store(config.s3)
        emitter = AuditEmitter(bus, SERVICE)
        audit.setup(app, store=store, keys=CheckpointKeys.from_files(config.audit.public_keys), emitter=emitter)
        playback.setup(
            app,
            store=store,
            config=config.playback,
            emitter=emitter,
            bus=bus,
            registry=rt.registry,
            pod=config.pod_name,
        )
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
