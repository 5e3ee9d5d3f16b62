"""The camera register as ingest needs it: where each camera's streams are and how to log in.

Read whole from the `cameras` table (a few thousand rows at most): at start, every `refresh_s` as a fallback,
and soon after the api announces a change (`CameraChanged`). A failed read keeps the last good register, so that a
Postgres outage never stops cameras that are being pulled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

import asyncpg

from argus_core.bus.messages import StreamName
from argus_ingest.demux import Source, Transport, with_credentials

log = logging.getLogger(__name__)

_QUERY = "SELECT id, site_id, main_url, sub_url, username, password, transport, enabled FROM cameras ORDER BY id"


@dataclass(frozen=True, slots=True)
class CameraRow:
    id: str
    main_url: str
    sub_url: str | None = None
    username: str | None = None
    password: str | None = None
    transport: Transport = "tcp"
    enabled: bool = True
    site: str | None = None  # `site_id`: which site's ingest pods pull it (ARGUS_INGEST_SITES)

    def url(self, stream: StreamName) -> str | None:
        return self.main_url if stream == "main" else (self.sub_url or None)

    def source(self, stream: StreamName, *, stall_s: float) -> Source | None:
        url = self.url(stream)
        if not url:
            return None
        return Source(
            camera=self.id,
            stream=stream,
            url=with_credentials(url, self.username, self.password),
            transport=self.transport,
            stall_s=stall_s,
        )

    def __repr__(self) -> str:  # never show the password
        return f"CameraRow({self.id}, site={self.site}, enabled={self.enabled}, transport={self.transport})"

    def served_by(self, sites: tuple[str, ...]) -> bool:
        """Whether a pod serving `sites` pulls this camera (no sites: every camera)."""
        return not sites or self.site in sites


def _transport(value: object) -> Literal["tcp", "udp"]:
    return "udp" if value == "udp" else "tcp"


async def load_register(pool: asyncpg.Pool) -> dict[str, CameraRow]:
    rows = await pool.fetch(_QUERY)
    return {
        r["id"]: CameraRow(
            id=r["id"],
            main_url=r["main_url"],
            sub_url=r["sub_url"],
            username=r["username"],
            password=r["password"],
            transport=_transport(r["transport"]),
            enabled=bool(r["enabled"]),
            site=r["site_id"],
        )
        for r in rows
    }


class Register:
    """The latest good copy of the register; `run()` keeps it fresh and calls `on_change` when it changed."""

    def __init__(self, pool: asyncpg.Pool, *, refresh_s: float = 5.0) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self.cameras: dict[str, CameraRow] = {}
        self.loaded = asyncio.Event()
        self.version = 0  # bumped at every change
        self._poke = asyncio.Event()
        self.failures = 0

    def poke(self) -> None:
        """Re-read soon (a `CameraChanged` arrived)."""
        self._poke.set()

    @property
    def enabled(self) -> dict[str, CameraRow]:
        return {cid: row for cid, row in self.cameras.items() if row.enabled}

    async def refresh(self) -> bool:
        """Read the table now; True if anything changed. Keeps the old copy when the read fails."""
        try:
            cameras = await load_register(self._pool)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self.failures += 1
            log.warning("could not read the camera register (keeping the last copy): %r", exc)
            return False
        self.loaded.set()
        if cameras == self.cameras:
            return False
        self.cameras = cameras
        self.version += 1
        return True

    async def run(self, stopping: asyncio.Event, on_change: asyncio.Event) -> None:
        while not stopping.is_set():
            if await self.refresh():
                on_change.set()
            self._poke.clear()
            try:
                async with asyncio.timeout(self._refresh_s if self.loaded.is_set() else 1.0):
                    await self._poke.wait()
                await asyncio.sleep(0.05)  # let a burst of changes arrive before reading
            except TimeoutError:
                pass
