"""Signed checkpoints in the object-locked bucket: they catch a rewrite of the whole table, and anchor the purge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec
import pytest
from minio.error import S3Error

from argus_audit.appender import ChainAppender
from argus_audit.checkpointer import Checkpointer
from argus_audit.cli import command
from argus_audit.purge import NS_PER_YEAR, Purger, PurgeRefused
from argus_core.audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointKeys,
    CheckpointSigner,
    CheckpointStore,
    generate_signing_key,
    object_key,
)
from argus_core.audit.entries import AuditQuery, fetch_entries
from argus_core.audit.verify import CheckpointSource, verify_log
from argus_devstack.backends import S3Handle
from tests.audit.support import Clock, events, rehash_from, tamper


@pytest.fixture
def checkpointer(
    pool: asyncpg.Pool, checkpoints: CheckpointStore, signer: CheckpointSigner, clock: Clock
) -> Checkpointer:
    return Checkpointer(pool, checkpoints, signer, clock=clock)


@pytest.fixture
def source(checkpoints: CheckpointStore, keys: CheckpointKeys) -> CheckpointSource:
    return CheckpointSource(checkpoints, keys)


def test_a_checkpoint_is_signed_and_a_forgery_is_refused(signer: CheckpointSigner, keys: CheckpointKeys) -> None:
    checkpoint = Checkpoint(seq=7, hash="ab" * 32, recorded_ns=1, created_ns=2, kind="periodic", key_id="audit-k1")
    data = signer.sign(checkpoint)
    assert keys.open(data) == checkpoint
    tampered = data.replace(b'\\"seq\\":7', b'\\"seq\\":8')
    assert tampered != data
    with pytest.raises(CheckpointError, match="signature"):
        keys.open(tampered)
    other = CheckpointSigner(generate_signing_key()[0], "audit-k1")
    with pytest.raises(CheckpointError, match="signature"):
        keys.open(other.sign(checkpoint))
    stranger = CheckpointSigner(generate_signing_key()[0], "k9")
    with pytest.raises(CheckpointError, match="unknown key"):
        keys.open(stranger.sign(msgspec.structs.replace(checkpoint, key_id="k9")))


async def test_checkpoints_are_written_when_the_chain_grew_and_held_by_the_store(
    appender: ChainAppender,
    checkpointer: Checkpointer,
    checkpoints: CheckpointStore,
    pool: asyncpg.Pool,
    s3_server: S3Handle,
) -> None:
    assert await checkpointer.write() is None  # nothing to vouch for yet
    await appender.append(events(5))
    first = await checkpointer.write()
    assert first is not None
    assert first.seq == 5
    assert await checkpointer.write() is None  # the head did not move
    await appender.append(events(2))
    second = await checkpointer.write()
    assert second is not None
    assert second.seq == 7
    assert await checkpoints.list() == [(5, object_key(5)), (7, object_key(7))]
    assert await pool.fetchval("SELECT count(*) FROM audit_checkpoint") == 2
    # The legal hold: the store refuses to delete the checkpoint's version (a plain delete only hides it).
    client = s3_server.client()
    listing = await asyncio.to_thread(
        lambda: list(client.list_objects(checkpoints.bucket, prefix=object_key(5), include_version=True))
    )
    assert len(listing) == 1
    with pytest.raises(S3Error):
        await asyncio.to_thread(
            client.remove_object, checkpoints.bucket, object_key(5), version_id=listing[0].version_id
        )


async def test_verification_holds_the_chain_against_the_newest_checkpoint(
    appender: ChainAppender, checkpointer: Checkpointer, pool: asyncpg.Pool, source: CheckpointSource
) -> None:
    await appender.append(events(5))
    await checkpointer.write()
    await appender.append(events(5))
    report = await verify_log(pool, source)
    assert report.ok, report.summary()
    assert (report.checkpoints, report.checkpoints_found, report.checkpoint_seq) == ("checked", 1, 5)


async def test_a_rewritten_whole_table_is_detected_by_the_checkpoints(
    appender: ChainAppender, checkpointer: Checkpointer, pool: asyncpg.Pool, source: CheckpointSource
) -> None:
    for _ in range(4):
        await appender.append(events(5))
        await checkpointer.write()  # checkpoints at 5, 10, 15, 20
    await tamper(pool, "UPDATE audit_log SET body = replace(body, 'op-1', 'op-2') WHERE seq = 12")
    await rehash_from(pool, 12)
    assert (await verify_log(pool)).ok  # the chain alone is consistent again ...
    report = await verify_log(pool, source)
    assert not report.ok  # ... but not with what was signed
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("rewritten", 11)
    assert "between 11 and 15" in report.problem.detail
    assert report.checkpoint_seq == 10


async def test_entries_removed_from_the_end_are_detected_by_the_checkpoints(
    appender: ChainAppender, checkpointer: Checkpointer, pool: asyncpg.Pool, source: CheckpointSource
) -> None:
    await appender.append(events(8))
    await checkpointer.write()
    await tamper(pool, "DELETE FROM audit_log WHERE seq > 6", "DELETE FROM audit_checkpoint")
    assert (await verify_log(pool)).ok
    report = await verify_log(pool, source)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("removed", 7)
    assert "entries 7 to 8 were removed" in report.problem.detail


async def test_a_forged_or_hidden_checkpoint_is_reported(
    appender: ChainAppender,
    checkpointer: Checkpointer,
    checkpoints: CheckpointStore,
    pool: asyncpg.Pool,
    source: CheckpointSource,
) -> None:
    await appender.append(events(4))
    await checkpointer.write()
    await appender.append(events(4))
    forger = CheckpointSigner(generate_signing_key()[0], "audit-k1")
    head = Checkpoint(seq=8, hash="00" * 32, recorded_ns=0, created_ns=0, kind="periodic", key_id="audit-k1")
    await checkpoints.store.put(checkpoints.bucket, object_key(8), forger.sign(head))
    report = await verify_log(pool, source)
    assert report.problem is None  # the entries are intact and the genuine checkpoint at 4 vouches for them
    assert report.checkpoint_seq == 4
    assert [(f.kind, f.seq) for f in report.findings] == [("checkpoint", 8)]
    # A delete marker hides the genuine checkpoint from a listing; the database still knows it was written.
    await checkpoints.store.delete_many(checkpoints.bucket, [object_key(4)])
    report = await verify_log(pool, source)
    assert ("checkpoint", 4) in [(f.kind, f.seq) for f in report.findings]


class _ListedEarlier(CheckpointStore):
    """The store as a verification that listed it before the audit service wrote its newest checkpoint sees it."""

    def __init__(self, store: CheckpointStore, first: list[tuple[int, str]]) -> None:
        super().__init__(store.store, store.bucket)
        self._first: list[tuple[int, str]] | None = first

    async def list(self) -> list[tuple[int, str]]:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await super().list()


async def test_a_checkpoint_written_while_the_log_is_verified_is_not_reported_missing(
    appender: ChainAppender,
    checkpointer: Checkpointer,
    checkpoints: CheckpointStore,
    keys: CheckpointKeys,
    pool: asyncpg.Pool,
) -> None:
    await appender.append(events(4))
    await checkpointer.write()
    listed_before = await checkpoints.list()
    await appender.append(events(4))
    await checkpointer.write()  # into the bucket and the database after the verification's listing
    report = await verify_log(pool, CheckpointSource(_ListedEarlier(checkpoints, listed_before), keys))
    assert report.ok, report.summary()
    assert report.checkpoint_seq == 4  # what the listing held: the walk covers every entry it names


# --- the retention purge ------------------------------------------------------------------------------------------


@pytest.fixture
def purger(
    pool: asyncpg.Pool,
    appender: ChainAppender,
    checkpoints: CheckpointStore,
    signer: CheckpointSigner,
    keys: CheckpointKeys,
    clock: Clock,
) -> Purger:
    return Purger(pool, appender, checkpoints, signer, keys, retention_years=2, clock=clock)


async def test_the_purge_removes_what_is_past_retention_and_the_chain_stays_verifiable(
    appender: ChainAppender,
    checkpointer: Checkpointer,
    purger: Purger,
    pool: asyncpg.Pool,
    source: CheckpointSource,
    clock: Clock,
) -> None:
    await appender.append(events(6))  # recorded at T0
    await checkpointer.write()
    clock.advance(365 * 86400)
    await appender.append(events(4, actor="op-2"))  # a year later
    clock.advance(400 * 86400)  # entries 1-6 are now past two years, 7-10 are not
    plan = await purger.plan()
    assert (plan.from_seq, plan.through_seq, plan.entries) == (1, 6, 6)
    assert (await purger.purge(dry_run=True)).plan == plan
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 10

    result = await purger.purge()
    assert result.anchor_key == object_key(6)
    assert [r["seq"] for r in await pool.fetch("SELECT seq FROM audit_log ORDER BY seq")] == [7, 8, 9, 10, 11]
    (purge_entry,) = await fetch_entries(pool, AuditQuery(action="audit.purge"))
    assert purge_entry.seq == 11
    assert purge_entry.event is not None
    assert purge_entry.event.details["through_seq"] == "6"
    assert purge_entry.event.details["entries"] == "6"
    assert purge_entry.event.actor.subject == "service:audit"

    report = await verify_log(pool, source)
    assert report.ok, report.summary()
    assert (report.anchor_seq, report.first_seq, report.head_seq, report.entries) == (6, 7, 11, 5)
    assert (await purger.purge()).plan.entries == 0  # nothing more is old enough

    # Appends continue from the head; a year on, the rest goes too and the newest anchor rules.
    clock.advance(366 * 86400)
    await appender.append(events(1))
    await purger.purge()
    report = await verify_log(pool, source)
    assert report.ok, report.summary()
    assert (report.anchor_seq, report.first_seq) == (10, 11)  # 7-10 are past two years, the purge's own entry is not


async def test_an_anchor_without_a_signed_checkpoint_is_reported(
    appender: ChainAppender, purger: Purger, pool: asyncpg.Pool, source: CheckpointSource, clock: Clock
) -> None:
    await appender.append(events(4))
    clock.advance(3 * NS_PER_YEAR / 1e9)
    await appender.append(events(2))
    await purger.purge()
    assert (await verify_log(pool, source)).ok
    # Someone forges an anchor further on and deletes entries behind it.
    await tamper(
        pool,
        "INSERT INTO audit_anchor SELECT seq, hash, recorded_ns, 1, 0, 'checkpoints/forged.json', 0 "
        "FROM audit_log WHERE seq = 5",
        "DELETE FROM audit_log WHERE seq <= 5",
    )
    report = await verify_log(pool, source)
    assert not report.ok
    assert ("anchor", 5) in [(f.kind, f.seq) for f in report.findings]


async def test_a_tampered_log_is_not_purged(
    appender: ChainAppender, purger: Purger, pool: asyncpg.Pool, clock: Clock
) -> None:
    await appender.append(events(4))
    clock.advance(3 * NS_PER_YEAR / 1e9)
    await tamper(pool, "UPDATE audit_log SET body = replace(body, 'op-1', 'op-3') WHERE seq = 2")
    with pytest.raises(PurgeRefused) as refused:
        await purger.purge()
    assert refused.value.finding is not None
    assert (refused.value.finding.kind, refused.value.finding.seq) == ("changed", 2)
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 4


def test_keygen_writes_a_key_pair_sharing_one_key_id(tmp_path: Path) -> None:
    path = tmp_path / "audit-2026.key"
    assert command(["keygen", str(path)]) == 0
    signer = CheckpointSigner.from_file(str(path))
    keys = CheckpointKeys.from_files([str(tmp_path / "audit-2026.pub")])
    assert keys.key_ids == (signer.key_id,) == ("audit-2026",)
    assert path.stat().st_mode & 0o077 == 0
    assert command(["keygen", str(path)]) == 2  # never overwrites a key
