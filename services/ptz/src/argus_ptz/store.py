"""Tours and park settings in Postgres (migration 0004_ptz): what each camera should do when nobody drives it."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import msgspec

from argus_core.bus import messages as m

_STEPS = msgspec.json.Decoder(tuple[m.PtzTourStep, ...])
_ENCODE = msgspec.json.Encoder()


@dataclass(frozen=True)
class Plan:
    """What a camera's automation runner should do: run `tour`, or else park as `park` says."""

    tour: m.PtzTour | None
    park: m.PtzPark | None


def _steps(raw: str | bytes) -> tuple[m.PtzTourStep, ...]:
    return _STEPS.decode(raw)


class TourStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def tours(self, camera: str) -> list[m.PtzTour]:
        rows = await self._pool.fetch(
            "SELECT name, steps::text AS steps, active FROM ptz_tours WHERE camera_id = $1 ORDER BY name", camera
        )
        return [m.PtzTour(name=r["name"], steps=_steps(r["steps"]), active=r["active"]) for r in rows]

    async def save_tour(self, camera: str, name: str, steps: tuple[m.PtzTourStep, ...], by: str) -> None:
        """Create or replace a tour; a running tour keeps running with its new steps."""
        await self._pool.execute(
            """
            INSERT INTO ptz_tours (camera_id, name, steps, updated_by) VALUES ($1, $2, $3::jsonb, $4)
            ON CONFLICT (camera_id, name) DO UPDATE
                SET steps = EXCLUDED.steps, updated_by = EXCLUDED.updated_by, updated_at = now()
            """,
            camera,
            name,
            _ENCODE.encode(steps).decode(),
            by,
        )

    async def delete_tour(self, camera: str, name: str) -> bool:
        status = await self._pool.execute("DELETE FROM ptz_tours WHERE camera_id = $1 AND name = $2", camera, name)
        return str(status).endswith(" 1")

    async def start_tour(self, camera: str, name: str, by: str) -> bool:
        """Make `name` the camera's running tour (stopping any other); False if there is no such tour."""
        async with self._pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval(
                "SELECT true FROM ptz_tours WHERE camera_id = $1 AND name = $2 FOR UPDATE", camera, name
            )
            if not exists:
                return False
            await conn.execute(
                "UPDATE ptz_tours SET active = false, updated_by = $3, updated_at = now() "
                "WHERE camera_id = $1 AND active AND name <> $2",
                camera,
                name,
                by,
            )
            await conn.execute(
                "UPDATE ptz_tours SET active = true, updated_by = $3, updated_at = now() "
                "WHERE camera_id = $1 AND name = $2",
                camera,
                name,
                by,
            )
        return True

    async def stop_tour(self, camera: str, by: str) -> str | None:
        """Stop the camera's running tour; its name, or None if none ran."""
        name: str | None = await self._pool.fetchval(
            "UPDATE ptz_tours SET active = false, updated_by = $2, updated_at = now() "
            "WHERE camera_id = $1 AND active RETURNING name",
            camera,
            by,
        )
        return name

    async def park(self, camera: str) -> m.PtzPark | None:
        row = await self._pool.fetchrow("SELECT enabled, idle_s, preset FROM ptz_park WHERE camera_id = $1", camera)
        if row is None:
            return None
        return m.PtzPark(enabled=row["enabled"], idle_s=row["idle_s"], preset=row["preset"])

    async def set_park(self, camera: str, park: m.PtzPark, by: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO ptz_park (camera_id, enabled, idle_s, preset, updated_by) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (camera_id) DO UPDATE SET enabled = EXCLUDED.enabled, idle_s = EXCLUDED.idle_s,
                preset = EXCLUDED.preset, updated_by = EXCLUDED.updated_by, updated_at = now()
            """,
            camera,
            park.enabled,
            park.idle_s,
            park.preset,
            by,
        )

    async def plans(self) -> dict[str, Plan]:
        """Every PTZ camera with a running tour or parking on, in one query (each pod runs it every scan)."""
        rows = await self._pool.fetch(
            """
            SELECT c.id, t.name, t.steps::text AS steps, p.idle_s, p.preset, p.camera_id IS NOT NULL AS parks
            FROM cameras c
            LEFT JOIN ptz_tours t ON t.camera_id = c.id AND t.active
            LEFT JOIN ptz_park p ON p.camera_id = c.id AND p.enabled
            WHERE c.enabled AND c.has_ptz AND (t.name IS NOT NULL OR p.camera_id IS NOT NULL)
            """
        )
        plans: dict[str, Plan] = {}
        for r in rows:
            tour = m.PtzTour(name=r["name"], steps=_steps(r["steps"]), active=True) if r["name"] else None
            park = m.PtzPark(enabled=True, idle_s=r["idle_s"], preset=r["preset"]) if r["parks"] else None
            plans[r["id"]] = Plan(tour, park)
        return plans
