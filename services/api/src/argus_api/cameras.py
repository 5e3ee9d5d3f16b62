"""The camera register over HTTP: what a caller may see of it depends on their grants."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from argus_core.http import Problem, identity_of
from argus_core.identity import ACTIONS, Identity

POOL_KEY = web.AppKey("argus.api.pool", asyncpg.Pool)

_COLUMNS = "id, name, site_id, latitude, longitude, has_ptz, enabled"


def _visible(identity: Identity, camera: str) -> bool:
    return any(identity.allows(action, camera) for action in ACTIONS)


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {k: record[k] for k in ("id", "name", "site_id", "latitude", "longitude", "has_ptz", "enabled")}


async def list_cameras(request: web.Request) -> web.Response:
    identity = identity_of(request)
    rows = await request.app[POOL_KEY].fetch(f"SELECT {_COLUMNS} FROM cameras ORDER BY id")
    return web.json_response({"cameras": [_row(r) for r in rows if _visible(identity, r["id"])]})


async def get_camera(request: web.Request) -> web.Response:
    identity = identity_of(request)
    camera = request.match_info["camera"]
    if not _visible(identity, camera):
        raise Problem(403, "Forbidden", f"no grant on camera {camera}", camera=camera)
    row = await request.app[POOL_KEY].fetchrow(f"SELECT {_COLUMNS} FROM cameras WHERE id = $1", camera)
    if row is None:
        raise Problem(404, "Not Found", f"unknown camera {camera}", camera=camera)
    return web.json_response(_row(row))


async def whoami(request: web.Request) -> web.Response:
    identity = identity_of(request)
    return web.json_response(
        {
            "subject": identity.subject,
            "roles": list(identity.roles),
            "org": identity.org,
            "expires_at": identity.expires_at,
            "grants": [{"actions": list(g.actions), "cameras": list(g.cameras)} for g in identity.grants],
        }
    )


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_get("/api/v1/cameras", list_cameras)
    app.router.add_get("/api/v1/cameras/{camera}", get_camera)
