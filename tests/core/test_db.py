"""Migrations against a real Postgres: applied once, even when two services start together."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from argus_core.db import (
    DatabaseConfig,
    Migration,
    MigrationError,
    applied_migrations,
    bundled_migrations,
    create_pool,
    migrate,
)


async def test_bundled_migrations_apply_and_are_listed(database_url: str) -> None:
    pool = await create_pool(DatabaseConfig(url=database_url))
    try:
        assert await applied_migrations(pool) == []
        applied = await migrate(pool)
        assert applied == [m.version for m in bundled_migrations()]
        listed = await applied_migrations(pool)
        assert [(a.version, a.name) for a in listed] == [(m.version, m.name) for m in bundled_migrations()]
        assert await migrate(pool) == []
        await pool.execute("INSERT INTO cameras (id, name, main_url) VALUES ('cam-1', 'High St', 'rtsp://x')")
    finally:
        await pool.close()


async def test_two_services_migrating_at_once_apply_each_migration_once(database_url: str) -> None:
    slow = [
        Migration(1, "first", "CREATE TABLE a (x int); SELECT pg_sleep(0.3);"),
        Migration(2, "second", "CREATE TABLE b (x int); INSERT INTO b VALUES (1);"),
    ]
    pools = [await create_pool(DatabaseConfig(url=database_url, pool_max=2)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(pool, slow) for pool in pools))
        flat = sorted(v for r in results for v in r)
        assert flat == [1, 2]
        assert await pools[0].fetchval("SELECT count(*) FROM b") == 1
        assert await pools[0].fetchval("SELECT count(*) FROM schema_migrations") == 2
    finally:
        for pool in pools:
            await pool.close()


async def test_an_edited_migration_is_refused(database_url: str) -> None:
    pool = await create_pool(DatabaseConfig(url=database_url))
    try:
        await migrate(pool, [Migration(1, "one", "CREATE TABLE t (x int);")])
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(pool, [Migration(1, "one", "CREATE TABLE t (x bigint);")])
    finally:
        await pool.close()


async def test_a_failing_migration_leaves_nothing_half_done(database_url: str) -> None:
    pool = await create_pool(DatabaseConfig(url=database_url))
    try:
        bad = [Migration(1, "bad", "CREATE TABLE t (x int); SELECT no_such_function();")]
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(pool, bad)
        assert await pool.fetchval("SELECT to_regclass('t') IS NULL")
        assert await applied_migrations(pool) == []
    finally:
        await pool.close()


async def test_the_cli_lists_applied_migrations(database_url: str) -> None:
    env = {**os.environ, "ARGUS_DB_URL": database_url}
    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argus_core", "migrations", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await listing.communicate()
    assert listing.returncode == 1  # nothing applied yet
    assert "0001  camera_registry" in out.decode()
    assert "not applied" in out.decode()
    applying = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argus_core", "migrations", "--apply", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await applying.communicate()
    assert applying.returncode == 0
    assert "not applied" not in out.decode()
    assert out.decode().count("applied 20") == len(bundled_migrations())
