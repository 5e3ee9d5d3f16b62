"""The camera register as the ptz service needs it: how to reach a camera's ONVIF services, and whether it has PTZ."""

from __future__ import annotations

import time

import asyncpg

from argus_ptz.errors import NoPtz, UnknownCamera
from argus_ptz.onvif_client import CameraRecord

_QUERY = "SELECT id, onvif_url, username, password, has_ptz, enabled FROM cameras WHERE id = $1"


class CameraRegister:
    """Rows of `cameras`, cached for `ttl_s` (and forgotten at once when the api announces a change)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 60.0) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, CameraRecord]] = {}

    async def record(self, camera: str) -> CameraRecord:
        """The camera's row; `UnknownCamera` if there is none."""
        cached = self._cache.get(camera)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        row = await self._pool.fetchrow(_QUERY, camera)
        if row is None:
            self._cache.pop(camera, None)
            raise UnknownCamera(camera)
        record = CameraRecord(
            id=row["id"],
            onvif_url=row["onvif_url"] or "",
            username=row["username"] or "",
            password=row["password"] or "",
            has_ptz=bool(row["has_ptz"]),
            enabled=bool(row["enabled"]),
        )
        self._cache[camera] = (now, record)
        return record

    async def ptz_camera(self, camera: str) -> CameraRecord:
        """The camera's row if it is a PTZ camera Argus may drive; `UnknownCamera` or `NoPtz` otherwise."""
        record = await self.record(camera)
        if not record.has_ptz:
            raise NoPtz(camera, "has no PTZ in the register")
        if not record.onvif_url:
            raise NoPtz(camera, "has no ONVIF address in the register")
        if not record.enabled:
            raise NoPtz(camera, "is disabled in the register")
        return record

    def forget(self, camera: str) -> None:
        self._cache.pop(camera, None)
