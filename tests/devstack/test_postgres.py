"""PostgresServer: a private cluster, a fresh database per test, restarts that keep the data."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

from argus_devstack.backends import PostgresHandle
from argus_devstack.errors import DevstackError
from argus_devstack.postgres import PostgresServer, validate_database_name
from argus_devstack.probes import postgres_answers
from argus_devstack.pytest_plugin import PostgresFactory, database_name_for


async def test_database_url_round_trip(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE camera (id int PRIMARY KEY, name text NOT NULL)")
        await conn.executemany("INSERT INTO camera VALUES ($1, $2)", [(1, "high street"), (2, "car park")])
        rows = await conn.fetch("SELECT id, name FROM camera ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "high street"), (2, "car park")]
    finally:
        await conn.close()


@pytest.mark.parametrize("which", ["first", "second"])
async def test_each_test_gets_its_own_empty_database(
    which: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == database_name_for(request.node.nodeid)
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
        # Both parametrized tests create the same table: this fails if they ever shared a database.
        await conn.execute("CREATE TABLE shared_name (which text)")
        await conn.execute("INSERT INTO shared_name VALUES ($1)", which)
    finally:
        await conn.close()


def test_database_names_differ_per_test() -> None:
    first = database_name_for("tests/x.py::test_a")
    assert first != database_name_for("tests/x.py::test_b")
    assert validate_database_name(first) == first


def test_create_and_drop_database(postgres_server: PostgresHandle) -> None:
    dsn = postgres_server.create_database("devstack_create_drop")
    assert dsn.endswith("/devstack_create_drop")
    assert "devstack_create_drop" in postgres_server.psql("SELECT datname FROM pg_database")
    postgres_server.drop_database("devstack_create_drop")
    postgres_server.drop_database("devstack_create_drop")  # IF EXISTS
    assert "devstack_create_drop" not in postgres_server.psql("SELECT datname FROM pg_database")
    with pytest.raises(ValueError, match="must match"):
        postgres_server.create_database('bad"; DROP DATABASE postgres; --')


async def _insert_and_count(dsn: str, value: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        # Durable against kill(): the fast cluster commits asynchronously unless a session asks otherwise.
        await conn.execute("SET synchronous_commit TO on")
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (value text)")
        await conn.execute("INSERT INTO kept VALUES ($1)", value)
        count = await conn.fetchval("SELECT count(*) FROM kept")
        assert isinstance(count, int)
        return count
    finally:
        await conn.close()


async def _values(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["value"] for r in await conn.fetch("SELECT value FROM kept ORDER BY value")]
    finally:
        await conn.close()


@pytest.mark.slow
async def test_rows_survive_stop_and_start_on_the_same_port(postgres_factory: PostgresFactory) -> None:
    server = await asyncio.to_thread(postgres_factory)
    port = server.port
    dsn = await asyncio.to_thread(server.create_database, "outage")
    assert await _insert_and_count(dsn, "before") == 1

    await asyncio.to_thread(server.stop)
    assert not server.running
    assert not postgres_answers("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(dsn, timeout=2)
    await asyncio.to_thread(server.start)
    assert server.port == port

    assert await _insert_and_count(dsn, "after") == 2
    assert await _values(dsn) == ["after", "before"]


@pytest.mark.slow
async def test_kill_with_open_sessions_then_start(postgres_factory: PostgresFactory) -> None:
    server = await asyncio.to_thread(postgres_factory)
    dsn = await asyncio.to_thread(server.create_database, "crash")
    await _insert_and_count(dsn, "committed")
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.to_thread(server.kill)
        assert not server.running
        # How the loss shows depends on when asyncpg reads the server's death: an error from the server, a broken
        # socket, or (the death noticed while the query was being sent) asyncpg's own state error.
        with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    await asyncio.to_thread(server.start)
    assert await _values(dsn) == ["committed"]


def test_server_runs_unprivileged(postgres_server: PostgresHandle) -> None:
    if not isinstance(postgres_server, PostgresServer):
        pytest.skip("the containers backend runs Postgres in a container")
    pid = postgres_server.pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:
        assert uid != 0, "postgres must not run as root"
    else:
        assert uid == os.geteuid()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"fsync=off" in cmdline
    assert b"listen_addresses=127.0.0.1" in cmdline


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the data folder to another account")
def test_data_dir_the_server_account_cannot_reach_fails_clearly(tmp_path: Path) -> None:
    # pytest's tmp_path lives under a 0700 folder of root's.
    server = PostgresServer(data_dir=tmp_path / "pg")
    try:
        with pytest.raises(DevstackError, match="not searchable"):
            server.start()
    finally:
        server.close()
