"""Appending events to the chain: once each, in one total order, whatever the number of audit pods.

Appends are serialised with a transaction-level Postgres advisory lock (`CHAIN_LOCK_KEY`): a batch takes the lock,
reads the head, drops events already stored (by event id, also within the batch), numbers and hashes the rest
after the head, copies them in and commits, which releases the lock. A second pod appending at the same time waits
for the lock and then sees the first pod's head, so the chain cannot fork; if it ever tried, the primary key on
`seq` and the unique event id would refuse the commit. The lock is held for one batch only (milliseconds), so the
pods share the work of the durable consumer without a leader election.

`recorded_ns` is the appender's clock, never less than the head's, so the chain's time never goes backwards even
between pods whose clocks differ a little.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from argus_audit.metrics import AuditMetrics
from argus_core.audit.chain import GENESIS, canonical_body, entry_hash
from argus_core.bus.messages import AuditEvent

log = logging.getLogger(__name__)

CHAIN_LOCK_KEY = 0x41554454  # "AUDT": whoever appends to the chain
CHECKPOINT_LOCK_KEY = 0x41554443  # "AUDC": whoever writes a checkpoint
PURGE_LOCK_KEY = 0x41554450  # "AUDP": whoever purges

Connection = asyncpg.Connection | PoolConnectionProxy

_COLUMNS = ("seq", "recorded_ns", "prev_hash", "hash", "body")


@dataclass(frozen=True)
class Head:
    """The newest entry (or the purge anchor when no entry is left; seq 0 and GENESIS for an empty log)."""

    seq: int
    hash: bytes
    recorded_ns: int


@dataclass(frozen=True)
class AppendResult:
    appended: int
    duplicates: int
    conflicts: int
    head: Head


async def read_head(conn: Connection) -> Head:
    row = await conn.fetchrow("SELECT seq, hash, recorded_ns FROM audit_log ORDER BY seq DESC LIMIT 1")
    if row is None:
        row = await conn.fetchrow("SELECT seq, hash, recorded_ns FROM audit_anchor ORDER BY seq DESC LIMIT 1")
    if row is None:
        return Head(0, GENESIS, 0)
    return Head(row["seq"], bytes(row["hash"]), row["recorded_ns"])


class ChainAppender:
    """The only writer of `audit_log`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        metrics: AuditMetrics | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._pool = pool
        self._metrics = metrics if metrics is not None else AuditMetrics()
        self._clock = clock
        self.healthy = True

    async def append(self, events: Sequence[AuditEvent]) -> AppendResult:
        """Append `events` in their order (skipping those already stored) and commit."""
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                result = await self.append_in(conn, events)
        except BaseException:
            self.healthy = False
            self._metrics.append_errors.inc()
            raise
        self.healthy = True
        self.record(result)
        self._metrics.append_seconds.observe(time.perf_counter() - started)
        return result

    def record(self, result: AppendResult) -> None:
        """Count a committed append in the metrics."""
        self._metrics.appended.inc(result.appended)
        self._metrics.duplicates.inc(result.duplicates)
        self._metrics.conflicts.inc(result.conflicts)
        self._metrics.head_seq.set(result.head.seq)

    async def append_in(self, conn: Connection, events: Sequence[AuditEvent]) -> AppendResult:
        """Append inside the caller's transaction (the purge appends its own event so)."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK_KEY)
        bodies: dict[str, str] = {}
        duplicates = 0
        conflicts = 0
        for event in events:
            event_id = event.id.replace("\x00", "\ufffd")  # as the canonical body will hold it
            body = canonical_body(event)
            known = bodies.get(event_id)
            if known is not None:
                duplicates += 1
                conflicts += known != body
                continue
            bodies[event_id] = body
        if bodies:
            stored = await conn.fetch(
                "SELECT event_id, body FROM audit_log WHERE event_id = ANY($1::text[])", list(bodies)
            )
            for row in stored:
                body = bodies.pop(row["event_id"])
                duplicates += 1
                if body != row["body"]:
                    conflicts += 1
                    log.warning(
                        "event %s arrived again with other content; the stored one stands",
                        row["event_id"],
                        extra={"event_id": row["event_id"]},
                    )
        head = await read_head(conn)
        seq, prev = head.seq, head.hash
        recorded_ns = max(self._clock(), head.recorded_ns)
        records: list[tuple[int, int, bytes, bytes, str]] = []
        for body in bodies.values():
            seq += 1
            digest = entry_hash(seq, recorded_ns, prev, body.encode())
            records.append((seq, recorded_ns, prev, digest, body))
            prev = digest
        if records:
            await conn.copy_records_to_table("audit_log", records=records, columns=_COLUMNS)
        new_head = Head(seq, prev, recorded_ns if records else head.recorded_ns)
        return AppendResult(len(records), duplicates, conflicts, new_head)
