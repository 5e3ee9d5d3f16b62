"""Verification of the audit log: walk the chain, then hold it against the signed checkpoints.

The walk (`ChainWalker`) reads the entries in seq order, in chunks, hashing each chunk in a worker thread so the
event loop stays free, and stops at the first entry that was changed, removed or inserted. It starts after the
newest purge anchor (or at entry 1 from `GENESIS`).

Someone who can write to the database could still rewrite the whole table with every hash recomputed; the walk
cannot see that, the checkpoints can. The newest checkpoint whose signature verifies is compared with the entry at
its seq: a match vouches for everything up to it (each hash covers all before it); a mismatch means entries up to
it were rewritten, and a bisection over the older checkpoints narrows down where. A signed checkpoint beyond the
end of the log means entries were removed from the end. Objects in the checkpoint folder that do not verify are
reported (nobody but the audit service can sign), and so are checkpoints the database recorded that are missing
from the bucket. Finally the schema is checked: the append-only triggers must be enabled and the search columns
still generated from the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg
import msgspec

from argus_core.audit.chain import GENESIS, ChainWalker, Finding, Row
from argus_core.audit.checkpoints import Checkpoint, CheckpointError, CheckpointKeys, CheckpointStore
from argus_core.storage import StorageError

log = logging.getLogger(__name__)

ENTRY_KINDS = ("changed", "removed", "inserted", "rewritten")

TRIGGERS = {
    "audit_log": ("audit_log_append_only", "audit_log_no_truncate"),
    "audit_anchor": ("audit_anchor_append_only", "audit_anchor_no_truncate"),
    "audit_checkpoint": ("audit_checkpoint_append_only", "audit_checkpoint_no_truncate"),
}
GENERATED_COLUMNS = ("event_id", "at_ns", "actor", "action", "camera")

_ROWS_SQL = "SELECT seq, recorded_ns, prev_hash, hash, body FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    hash: bytes
    recorded_ns: int
    checkpoint_key: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a verification; `problem` is the first entry found changed, removed, inserted or rewritten."""

    ok: bool
    entries: int  # entries that passed the walk
    first_seq: int
    head_seq: int
    head_hash: str
    anchor_seq: int
    checkpoints: Literal["checked", "not_checked"]
    checkpoints_found: int
    checkpoint_seq: int | None  # the newest checkpoint that vouches for the log, if any
    problem: Finding | None
    findings: tuple[Finding, ...]
    elapsed_s: float

    def summary(self) -> str:
        if self.ok:
            vouched = (
                f"; signed checkpoint at {self.checkpoint_seq} matches"
                if self.checkpoint_seq is not None
                else ("; no checkpoint yet" if self.checkpoints == "checked" else "; checkpoints not checked")
            )
            return (
                f"audit log verified: {self.entries} entries ({self.first_seq}..{self.head_seq}), "
                f"head {self.head_hash[:16]}...{vouched} ({self.elapsed_s:.2f} s)"
            )
        lines = [f"audit log FAILED verification ({len(self.findings)} finding(s), {self.elapsed_s:.2f} s):"]
        lines += [
            f"  {f.kind} at entry {f.seq}: {f.detail}" if f.seq else f"  {f.kind}: {f.detail}" for f in self.findings
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class CheckpointSource:
    """Where checkpoints are and the keys to check their signatures with."""

    store: CheckpointStore
    keys: CheckpointKeys


async def read_anchor(conn: asyncpg.Connection | asyncpg.Pool) -> Anchor | None:
    row = await conn.fetchrow(
        "SELECT seq, hash, recorded_ns, checkpoint_key FROM audit_anchor ORDER BY seq DESC LIMIT 1"
    )
    if row is None:
        return None
    return Anchor(
        seq=row["seq"], hash=bytes(row["hash"]), recorded_ns=row["recorded_ns"], checkpoint_key=row["checkpoint_key"]
    )


async def schema_findings(conn: asyncpg.Connection | asyncpg.Pool) -> list[Finding]:
    """What is wrong with the protections of the audit tables (a disabled trigger, a column no longer generated)."""
    findings: list[Finding] = []
    rows = await conn.fetch(
        "SELECT c.relname, t.tgname, t.tgenabled::text AS tgenabled "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relname = ANY($1::text[]) AND c.relnamespace = to_regnamespace(current_schema())::oid "
        "AND NOT t.tgisinternal",
        list(TRIGGERS),
    )
    present = {(r["relname"], r["tgname"]): r["tgenabled"] for r in rows}
    for table, names in TRIGGERS.items():
        for name in names:
            state = present.get((table, name))
            if state is None:
                findings.append(Finding(kind="schema", seq=0, detail=f"trigger {name} on {table} is missing"))
            elif state == "D":
                findings.append(Finding(kind="schema", seq=0, detail=f"trigger {name} on {table} is disabled"))
    generated = await conn.fetch(
        "SELECT column_name, is_generated FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'audit_log' AND column_name = ANY($1::text[])",
        list(GENERATED_COLUMNS),
    )
    states = {r["column_name"]: r["is_generated"] for r in generated}
    for column in GENERATED_COLUMNS:
        if states.get(column) != "ALWAYS":
            findings.append(
                Finding(kind="schema", seq=0, detail=f"audit_log.{column} is no longer generated from the body")
            )
    return findings


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _CheckpointReader:
    """Opens checkpoint objects once each, recording those that do not verify."""

    def __init__(self, source: CheckpointSource, findings: list[Finding]) -> None:
        self._source = source
        self._findings = findings
        self._opened: dict[int, Checkpoint | None] = {}

    async def open(self, seq: int, key: str) -> Checkpoint | None:
        if seq in self._opened:
            return self._opened[seq]
        checkpoint: Checkpoint | None = None
        try:
            checkpoint = self._source.keys.open(await self._source.store.read(key))
        except CheckpointError as exc:
            self._findings.append(Finding(kind="checkpoint", seq=seq, detail=f"checkpoint object {key}: {exc}"))
        except StorageError as exc:
            self._findings.append(Finding(kind="checkpoint", seq=seq, detail=f"checkpoint object {key}: {exc}"))
        if checkpoint is not None and checkpoint.seq != seq:
            self._findings.append(
                Finding(
                    kind="checkpoint",
                    seq=seq,
                    detail=f"checkpoint object {key} holds the checkpoint of entry {checkpoint.seq} (copied)",
                )
            )
            checkpoint = None
        self._opened[seq] = checkpoint
        return checkpoint


async def _entry_hash(pool: asyncpg.Pool, seq: int) -> bytes | None:
    value = await pool.fetchval("SELECT hash FROM audit_log WHERE seq = $1", seq)
    return bytes(value) if value is not None else None


async def _check_against_checkpoints(
    pool: asyncpg.Pool,
    source: CheckpointSource,
    listing: list[tuple[int, str]],
    anchor: Anchor | None,
    walker: ChainWalker,
    findings: list[Finding],
) -> tuple[int | None, bool]:
    """Compare the walked chain with the checkpoints: (the seq of the newest that matches, whether one verified)."""
    reader = _CheckpointReader(source, findings)
    anchor_seq = anchor.seq if anchor is not None else 0
    if anchor is not None:
        checkpoint = await reader.open(anchor.seq, anchor.checkpoint_key)
        if checkpoint is None or checkpoint.hash != anchor.hash.hex():
            findings.append(
                Finding(
                    kind="anchor",
                    seq=anchor.seq,
                    detail=(
                        f"the chain starts after entry {anchor.seq}, but no signed checkpoint vouches for that anchor "
                        f"({anchor.checkpoint_key})"
                    ),
                )
            )
    # Only what the walk accepted can be compared; a chain problem at K leaves entries from K unchecked.
    limit = walker.head_seq if walker.finding is None else walker.finding.seq - 1
    candidates = [(seq, key) for seq, key in listing if seq > anchor_seq]
    any_valid = False
    newest: tuple[int, Checkpoint] | None = None
    for seq, key in reversed(candidates):
        if walker.finding is not None and seq > limit:
            continue
        checkpoint = await reader.open(seq, key)
        if checkpoint is not None:
            newest = (seq, checkpoint)
            any_valid = True
            break
    if newest is None:
        return None, any_valid
    seq, checkpoint = newest
    if seq > limit:
        findings.append(
            Finding(
                kind="removed",
                seq=limit + 1,
                detail=(
                    f"the log ends at entry {limit}, but a checkpoint signed {_when(checkpoint.created_ns)} vouches "
                    f"for entries up to {seq}: entries {limit + 1} to {seq} were removed"
                ),
            )
        )
        return None, any_valid
    stored = await _entry_hash(pool, seq)
    if stored is not None and stored.hex() == checkpoint.hash:
        return seq, any_valid
    # Rewritten at or before `seq`: find the newest older checkpoint that still matches.
    good = anchor_seq
    older = [(s, k) for s, k in candidates if s < seq]
    lo, hi = 0, len(older)  # invariant: the answer lies in older[lo:hi] or is `good`
    bad_seq = seq
    while lo < hi:
        mid = (lo + hi) // 2
        mseq, mkey = older[mid]
        mcheck = await reader.open(mseq, mkey)
        if mcheck is None:
            older.pop(mid)
            hi -= 1
            continue
        mstored = await _entry_hash(pool, mseq)
        if mstored is not None and mstored.hex() == mcheck.hash:
            good = mseq
            lo = mid + 1
        else:
            bad_seq = mseq
            hi = mid
    findings.append(
        Finding(
            kind="rewritten",
            seq=good + 1,
            detail=(
                f"the log was rewritten with recomputed hashes: entry {bad_seq} differs from its signed checkpoint "
                f"(signed {_when(checkpoint.created_ns)}), "
                + (f"the checkpoint at entry {good} still matches" if good > anchor_seq else "no earlier one matches")
                + f"; the first changed entry is between {good + 1} and {bad_seq}"
            ),
        )
    )
    return (good if good > anchor_seq else None), any_valid


async def verify_log(
    pool: asyncpg.Pool, checkpoints: CheckpointSource | None = None, *, chunk: int = 20_000
) -> VerifyReport:
    """Walk the chain and compare it with the checkpoints (when `checkpoints` is given). What it finds, an
    unreadable audit bucket included, is in the report; it raises only when the database cannot be read."""
    started = time.perf_counter()
    findings: list[Finding] = await schema_findings(pool)
    listing: list[tuple[int, str]] = []
    if checkpoints is not None:
        try:
            listing = await checkpoints.store.list()  # before the walk: every listed checkpoint is of a walked entry
        except StorageError as exc:
            findings.append(Finding(kind="checkpoint", seq=0, detail=f"the audit bucket cannot be read: {exc}"))
            checkpoints = None
    anchor = await read_anchor(pool)
    walker = ChainWalker(anchor.seq + 1, anchor.hash) if anchor is not None else ChainWalker(1, GENESIS)
    after = walker.first_seq - 1
    async with pool.acquire() as conn:
        # The next chunk is read while the worker thread hashes this one.
        records = await conn.fetch(_ROWS_SQL, after, chunk)
        while records and not walker.done:
            rows = cast(list[Row], records)  # a Record unpacks like the tuple the walker reads
            after = records[-1][0]
            upcoming = asyncio.ensure_future(conn.fetch(_ROWS_SQL, after, chunk)) if len(records) == chunk else None
            try:
                await asyncio.to_thread(walker.feed, rows)
            except BaseException:
                if upcoming is not None:
                    upcoming.cancel()
                    await asyncio.gather(upcoming, return_exceptions=True)
                raise
            records = await upcoming if upcoming is not None else []
    walker.finish()
    if walker.finding is not None:
        findings.append(walker.finding)
    checkpoint_seq: int | None = None
    if checkpoints is not None:
        checkpoint_seq, _ = await _check_against_checkpoints(pool, checkpoints, listing, anchor, walker, findings)
        listed = {seq for seq, _ in listing}
        recorded = await pool.fetch("SELECT seq, object_key FROM audit_checkpoint ORDER BY seq")
        if any(row["seq"] not in listed for row in recorded):
            # The audit service may have written (and recorded) a checkpoint since the listing, while the service
            # runs beside this verification: look again before calling one missing.
            with contextlib.suppress(StorageError):
                listed |= {seq for seq, _ in await checkpoints.store.list()}
        for row in recorded:
            if row["seq"] not in listed:
                findings.append(
                    Finding(
                        kind="checkpoint",
                        seq=row["seq"],
                        detail=f"checkpoint {row['object_key']} that the database recorded is missing from the bucket",
                    )
                )
    entry_findings = sorted((f for f in findings if f.kind in ENTRY_KINDS), key=lambda f: f.seq)
    ordered = tuple(entry_findings + [f for f in findings if f.kind not in ENTRY_KINDS])
    return VerifyReport(
        ok=not ordered,
        entries=walker.count,
        first_seq=walker.first_seq,
        head_seq=walker.head_seq,
        head_hash=walker.head_hash.hex(),
        anchor_seq=anchor.seq if anchor is not None else 0,
        checkpoints="checked" if checkpoints is not None else "not_checked",
        checkpoints_found=len(listing),
        checkpoint_seq=checkpoint_seq,
        problem=entry_findings[0] if entry_findings else None,
        findings=ordered,
        elapsed_s=time.perf_counter() - started,
    )
