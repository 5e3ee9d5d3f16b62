"""The log in Postgres: appends once each in one order, refuses changes, and verification names what was tampered."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import msgspec
import pytest

from argus_audit.appender import ChainAppender
from argus_audit.purge import Purger
from argus_core.audit.chain import canonical_body, entry_hash
from argus_core.audit.checkpoints import CheckpointKeys, CheckpointSigner, CheckpointStore
from argus_core.audit.entries import AuditQuery, fetch_entries
from argus_core.audit.verify import CheckpointSource, verify_log
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.storage import ObjectStore
from argus_devstack.backends import PostgresHandle
from tests.audit.support import T0, Clock, events, rehash, tamper


async def seqs(pool: asyncpg.Pool) -> list[int]:
    return [r["seq"] for r in await pool.fetch("SELECT seq FROM audit_log ORDER BY seq")]


async def test_appended_events_form_a_verifiable_chain(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    result = await appender.append(events(5))
    assert (result.appended, result.duplicates, result.head.seq) == (5, 0, 5)
    await appender.append(events(3, actor="op-2"))
    report = await verify_log(pool, chunk=2)
    assert report.ok, report.summary()
    assert (report.entries, report.first_seq, report.head_seq) == (8, 1, 8)
    row = await pool.fetchrow("SELECT seq, prev_hash, hash, body, actor, camera, action FROM audit_log WHERE seq = 6")
    assert row is not None
    assert (row["actor"], row["camera"], row["action"]) == ("op-2", "cam-1", "live.view.start")
    assert report.head_hash == (await pool.fetchval("SELECT hash FROM audit_log WHERE seq = 8")).hex()


async def test_a_duplicated_event_is_stored_once(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    batch = events(4)
    result = await appender.append([batch[0], batch[1], batch[0]])
    assert (result.appended, result.duplicates) == (2, 1)
    result = await appender.append([batch[1], batch[2], batch[3], batch[2]])
    assert (result.appended, result.duplicates) == (2, 2)
    assert await seqs(pool) == [1, 2, 3, 4]
    ids = [r["event_id"] for r in await pool.fetch("SELECT event_id FROM audit_log ORDER BY seq")]
    assert ids == [e.id for e in batch]
    # The same id with other content: the first stands, the conflict is counted.
    forged = events(1, actor="someone-else")[0]
    result = await appender.append([msgspec.structs.replace(forged, id=batch[0].id)])
    assert (result.appended, result.duplicates, result.conflicts) == (0, 1, 1)
    assert await pool.fetchval("SELECT actor FROM audit_log WHERE seq = 1") == "op-1"
    assert (await verify_log(pool)).ok


async def test_recorded_time_comes_from_the_clock_and_never_goes_back(
    appender: ChainAppender, pool: asyncpg.Pool, clock: Clock
) -> None:
    await appender.append(events(2))
    clock.advance(-60)
    await appender.append(events(2))
    clock.advance(120)
    await appender.append(events(1))
    times = [r["recorded_ns"] for r in await pool.fetch("SELECT recorded_ns FROM audit_log ORDER BY seq")]
    assert times == [T0, T0, T0, T0, T0 + 60_000_000_000]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET body = replace(body, 'op-1', 'op-9') WHERE seq = 2",
        "UPDATE audit_log SET recorded_ns = 0",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
        "UPDATE audit_anchor SET seq = 1",
        "DELETE FROM audit_checkpoint",
        "TRUNCATE audit_checkpoint",
    ],
)
async def test_nobody_changes_or_removes_an_entry(appender: ChainAppender, pool: asyncpg.Pool, statement: str) -> None:
    await appender.append(events(3))
    await pool.execute(
        "INSERT INTO audit_anchor VALUES (9, decode(repeat('00', 32), 'hex'), 0, 9, 0, 'k', 0);"
        "INSERT INTO audit_checkpoint VALUES (3, decode(repeat('00', 32), 'hex'), 'periodic', 'k', 'k1', 0)"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute(statement)  # as the superuser: the trigger refuses everyone
    assert await seqs(pool) == [1, 2, 3]


async def test_the_purge_switch_alone_does_not_open_the_table(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await appender.append(events(3))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('argus.audit_purge', 'on', true)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_log WHERE seq = 1")  # no anchor covers it


async def test_the_application_role_may_only_insert_and_read_but_still_purges(
    postgres_server: PostgresHandle,
    database_url: str,
    checkpoints: CheckpointStore,
    signer: CheckpointSigner,
    keys: CheckpointKeys,
    clock: Clock,
) -> None:
    role = f"argus_app_{secrets.token_hex(4)}"
    database = database_url.rsplit("/", 1)[1]
    postgres_server.psql(f"CREATE ROLE {role} LOGIN")
    postgres_server.psql(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}", database)
    app_pool = await create_pool(DatabaseConfig(url=database_url.replace("postgres@", f"{role}@", 1)))
    try:
        await migrate(app_pool)  # the role owns what it creates, as in a deployment
        appender = ChainAppender(app_pool, clock=clock)
        await appender.append(events(3))
        for statement in ("UPDATE audit_log SET recorded_ns = 0", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await app_pool.execute(statement)
        assert not await app_pool.fetchval("SELECT has_table_privilege('audit_log', 'DELETE')")
        # The purge grants itself DELETE for its own transaction only (the owner can), behind a signed anchor.
        clock.advance(7 * 366 * 86400)
        await appender.append(events(1))
        purger = Purger(app_pool, appender, checkpoints, signer, keys, retention_years=6, clock=clock)
        assert (await purger.purge()).plan.entries == 3
        assert [r["seq"] for r in await app_pool.fetch("SELECT seq FROM audit_log ORDER BY seq")] == [4, 5]
        assert not await app_pool.fetchval("SELECT has_table_privilege('audit_log', 'DELETE')")
        assert (await verify_log(app_pool, CheckpointSource(checkpoints, keys))).ok
    finally:
        await app_pool.close()
        postgres_server.psql(f"DROP OWNED BY {role}", database)
        postgres_server.psql(f"DROP ROLE {role}")


async def test_two_appenders_at_once_keep_one_total_order(database_url: str, pool: asyncpg.Pool) -> None:
    other = await create_pool(DatabaseConfig(url=database_url, pool_max=4))
    try:
        first, second = ChainAppender(pool), ChainAppender(other)
        batches = [events(25, actor=f"op-{i}") for i in range(16)]
        await asyncio.gather(*(app.append(b) for app, b in zip([first, second] * 8, batches, strict=True)))
    finally:
        await other.close()
    assert await seqs(pool) == list(range(1, 401))
    assert await pool.fetchval("SELECT count(DISTINCT event_id) FROM audit_log") == 400
    # Each batch is contiguous: appends do not interleave.
    actors = [r["actor"] for r in await pool.fetch("SELECT actor FROM audit_log ORDER BY seq")]
    assert all(len(set(actors[i : i + 25])) == 1 for i in range(0, 400, 25))
    assert (await verify_log(pool)).ok


# --- tampering, as someone with superuser rights on the database could ------------------------------------------


async def ten(appender: ChainAppender) -> None:
    await appender.append(events(10))


async def first_problem(pool: asyncpg.Pool) -> tuple[str, int]:
    report = await verify_log(pool, chunk=3)
    assert not report.ok
    assert report.problem is not None, report.summary()
    return report.problem.kind, report.problem.seq


async def test_an_edited_row_is_named(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await ten(appender)
    await tamper(pool, "UPDATE audit_log SET body = replace(body, 'op-1', 'op-2') WHERE seq = 4")
    assert await pool.fetchval("SELECT actor FROM audit_log WHERE seq = 4") == "op-2"  # the search column follows
    assert await first_problem(pool) == ("changed", 4)


async def test_an_edited_row_with_its_hash_recomputed_is_named(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await ten(appender)
    await tamper(pool, "UPDATE audit_log SET body = replace(body, 'test 6', 'nothing') WHERE seq = 7")
    await rehash(pool, 7)
    assert await first_problem(pool) == ("changed", 7)


async def test_an_edited_time_is_named(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await ten(appender)
    await tamper(pool, "UPDATE audit_log SET recorded_ns = recorded_ns + 1 WHERE seq = 10")
    assert await first_problem(pool) == ("changed", 10)


async def test_a_deleted_row_is_named(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await ten(appender)
    await tamper(pool, "DELETE FROM audit_log WHERE seq = 5")
    assert await first_problem(pool) == ("removed", 5)


async def test_a_deleted_row_with_the_rest_renumbered_is_named(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await ten(appender)
    await tamper(
        pool,
        "DELETE FROM audit_log WHERE seq = 5",
        "UPDATE audit_log SET seq = seq + 1000000 WHERE seq > 5",
        "UPDATE audit_log SET seq = seq - 1000001 WHERE seq > 1000000",
    )
    assert await seqs(pool) == list(range(1, 10))
    assert await first_problem(pool) == ("removed", 5)


@pytest.mark.parametrize("careful", [False, True])
async def test_an_inserted_row_is_named(appender: ChainAppender, pool: asyncpg.Pool, careful: bool) -> None:
    await ten(appender)
    row = await pool.fetchrow("SELECT recorded_ns, hash FROM audit_log WHERE seq = 3")
    assert row is not None
    body = canonical_body(events(1, actor="intruder")[0])
    prev = bytes(row["hash"])
    digest = entry_hash(4, row["recorded_ns"], prev, body.encode()) if careful else bytes(32)
    await tamper(
        pool,
        "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= 4",
        "UPDATE audit_log SET seq = seq - 999999 WHERE seq > 1000000",
        "INSERT INTO audit_log (seq, recorded_ns, prev_hash, hash, body) VALUES "
        f"(4, {row['recorded_ns']}, '\\x{prev.hex()}', '\\x{digest.hex()}', '{body}')",
    )
    assert await first_problem(pool) == ("inserted", 4)
    found = await fetch_entries(pool, AuditQuery(actor="intruder"))
    assert [e.seq for e in found] == [4]


async def test_a_disabled_trigger_is_reported(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await ten(appender)
    await pool.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    report = await verify_log(pool)
    assert not report.ok
    assert report.problem is None  # no entry was touched ...
    assert [f.kind for f in report.findings] == ["schema"]  # ... but the protection is off
    assert "audit_log_append_only" in report.findings[0].detail


async def test_search_by_actor_camera_action_and_time(appender: ChainAppender, pool: asyncpg.Pool) -> None:
    await appender.append(events(3, actor="op-1", camera="cam-1", action="live.view.start", at_ns=T0))
    await appender.append(events(2, actor="op-2", camera="cam-2", action="playback.clip", at_ns=T0 + 10**12))
    await appender.append(events(2, actor="op-1", camera="cam-2", action="playback.export", at_ns=T0 + 2 * 10**12))

    async def found(**query: object) -> list[int]:
        return [e.seq for e in await fetch_entries(pool, AuditQuery(**query))]  # type: ignore[arg-type]

    assert await found(actor="op-1") == [1, 2, 3, 6, 7]
    assert await found(camera="cam-2") == [4, 5, 6, 7]
    assert await found(action="playback.*") == [4, 5, 6, 7]
    assert await found(action="playback.clip") == [4, 5]
    assert await found(since_ns=T0 + 10**12, until_ns=T0 + 2 * 10**12) == [4, 5]
    assert await found(actor="op-1", camera="cam-2") == [6, 7]
    assert await found(service="liveview", after_seq=5) == [6, 7]
    assert await found(outcome="denied") == []
    page = await fetch_entries(pool, AuditQuery(), limit=2)
    assert [e.seq for e in page] == [1, 2]
    assert page[0].event is not None
    assert page[0].event.actor.subject == "op-1"


async def test_verification_without_a_store_is_not_checked(pool: asyncpg.Pool, object_store: ObjectStore) -> None:
    report = await verify_log(pool)
    assert report.ok
    assert report.checkpoints == "not_checked"
    assert (report.entries, report.head_seq) == (0, 0)
