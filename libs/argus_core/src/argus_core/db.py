"""Postgres through an asyncpg pool, and the schema's versioned migrations.

Migrations are the SQL files in `argus_core/migrations/`, named `NNNN_what.sql` and applied in order, each in its
own transaction, at service start. A session-level advisory lock serialises them, so two services starting at
once apply each migration exactly once; a file whose text changed after it was applied stops the service (history
is never rewritten: add a new migration instead).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated

import asyncpg
import msgspec

from argus_core.errors import ArgusError

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x41524755  # "ARGU": one advisory lock for schema changes, whoever takes it
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_DB_URL` and pool limits."""

    url: Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://")]
    pool_min: Annotated[int, msgspec.Meta(ge=0)] = 1
    pool_max: Annotated[int, msgspec.Meta(ge=1)] = 10
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    command_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class MigrationError(ArgusError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with argus_core, in version order."""
    found: list[Migration] = []
    for entry in resources.files("argus_core.migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {versions}")
    return found


async def create_pool(config: DatabaseConfig) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        config.url,
        min_size=config.pool_min,
        max_size=config.pool_max,
        timeout=config.connect_timeout_s,
        command_timeout=config.command_timeout_s,
    )
    if pool is None:  # pragma: no cover - asyncpg returns None only for a pool that is not awaited
        raise MigrationError("asyncpg did not create a pool")
    return pool


_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(pool: asyncpg.Pool, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is missing under the advisory lock; return the versions this call applied."""
    wanted = bundled_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_LEDGER)
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            done = {r["version"]: r for r in rows}
            for migration in wanted:
                row = done.get(migration.version)
                if row is not None:
                    if row["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was "
                            "applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def applied_migrations(pool: asyncpg.Pool) -> list[AppliedMigration]:
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return []
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
    return [AppliedMigration(r["version"], r["name"], r["checksum"], r["applied_at"]) for r in rows]
