"""The audit retention purge: entries older than `ARGUS_AUDIT_RETENTION_YEARS` go, and the chain stays verifiable.

The purge removes a prefix of the chain, entries 1 (or the previous anchor + 1) to N, where N is the last entry
recorded before the cutoff. In order:

1. the whole log is verified (chain and checkpoints); a log that fails is not purged, so a purge can never launder
   a tampered entry;
2. a checkpoint of kind "anchor" for entry N (its seq and hash, signed) is written to the audit bucket;
3. in one transaction holding the chain lock: the anchor row is inserted, the transaction sets `argus.audit_purge`
   (the only case in which the append-only trigger lets a delete through, and only of entries at or before the
   newest anchor), the entries are deleted, and an `audit.purge` event (what, how many, the cutoff, the anchor)
   is appended to the chain itself. If the application role lacks DELETE (the migration revokes it), the purge
   grants it to itself for this transaction only, which the table's owner can do.

Afterwards verification starts at N + 1 from the anchor's hash, and checks the anchor against its signed checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from argus_audit.appender import PURGE_LOCK_KEY, ChainAppender
from argus_audit.checkpointer import record_checkpoint
from argus_audit.metrics import AuditMetrics
from argus_core.audit.chain import Finding
from argus_core.audit.checkpoints import Checkpoint, CheckpointKeys, CheckpointSigner, CheckpointStore
from argus_core.audit.emitter import new_event
from argus_core.audit.verify import CheckpointSource, read_anchor, verify_log
from argus_core.errors import ArgusError
from argus_core.storage import StorageError

log = logging.getLogger(__name__)

NS_PER_YEAR = int(365.2425 * 86400 * 1_000_000_000)
SERVICE = "audit"


class PurgeRefused(ArgusError):
    """The log failed verification, so it is not purged."""

    def __init__(self, finding: Finding | None, summary: str) -> None:
        super().__init__(f"audit purge refused: the log failed verification: {summary}")
        self.finding = finding


@dataclass(frozen=True)
class PurgePlan:
    cutoff_ns: int
    from_seq: int  # first entry to remove
    through_seq: int  # last entry to remove (from_seq - 1 when there is nothing to remove)

    @property
    def entries(self) -> int:
        return max(0, self.through_seq - self.from_seq + 1)


@dataclass(frozen=True)
class PurgeResult:
    plan: PurgePlan
    dry_run: bool
    anchor_key: str = ""
    event_id: str = ""


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


class Purger:
    def __init__(
        self,
        pool: asyncpg.Pool,
        appender: ChainAppender,
        store: CheckpointStore,
        signer: CheckpointSigner,
        keys: CheckpointKeys,
        *,
        retention_years: float,
        metrics: AuditMetrics | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._pool = pool
        self._appender = appender
        self._store = store
        self._signer = signer
        self._keys = keys
        self._retention_ns = int(retention_years * NS_PER_YEAR)
        self.retention_years = retention_years
        self._metrics = metrics if metrics is not None else AuditMetrics()
        self._clock = clock

    async def plan(self, now_ns: int | None = None) -> PurgePlan:
        """What a purge now would remove (nothing is changed)."""
        cutoff = (self._clock() if now_ns is None else now_ns) - self._retention_ns
        anchor = await read_anchor(self._pool)
        start = anchor.seq if anchor is not None else 0
        first_kept = await self._pool.fetchval(
            "SELECT seq FROM audit_log WHERE seq > $1 AND recorded_ns >= $2 ORDER BY seq LIMIT 1", start, cutoff
        )
        if first_kept is None:
            head = await self._pool.fetchval("SELECT max(seq) FROM audit_log")
            through = head if head is not None else start
        else:
            through = first_kept - 1
        return PurgePlan(cutoff_ns=cutoff, from_seq=start + 1, through_seq=max(start, through))

    async def purge(self, now_ns: int | None = None, *, dry_run: bool = False) -> PurgeResult:
        plan = await self.plan(now_ns)
        if dry_run or plan.entries == 0:
            return PurgeResult(plan, dry_run)
        async with self._pool.acquire() as lock_conn:
            # One purge at a time across pods (a session lock: the steps below use their own connections).
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK_KEY):
                log.info("another audit pod is purging")
                return PurgeResult(PurgePlan(plan.cutoff_ns, plan.from_seq, plan.from_seq - 1), dry_run)
            try:
                return await self._purge(await self.plan(now_ns))
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK_KEY)

    async def _purge(self, plan: PurgePlan) -> PurgeResult:
        if plan.entries == 0:
            return PurgeResult(plan, False)
        report = await verify_log(self._pool, CheckpointSource(self._store, self._keys))
        if not report.ok:
            raise PurgeRefused(report.problem or report.findings[0], report.summary())
        row = await self._pool.fetchrow("SELECT hash, recorded_ns FROM audit_log WHERE seq = $1", plan.through_seq)
        if row is None:  # verified a moment ago, and entries are never removed but here
            raise PurgeRefused(None, f"entry {plan.through_seq} disappeared during the purge")
        anchor = Checkpoint(
            seq=plan.through_seq,
            hash=bytes(row["hash"]).hex(),
            recorded_ns=row["recorded_ns"],
            created_ns=self._clock(),
            kind="anchor",
            key_id=self._signer.key_id,
            entries_purged=plan.entries,
        )
        key = await self._store.write(anchor, self._signer)
        event = new_event(
            SERVICE,
            "audit.purge",
            actor=SERVICE,
            target=key,
            reason=f"audit retention of {self.retention_years:g} years",
            details={
                "from_seq": str(plan.from_seq),
                "through_seq": str(plan.through_seq),
                "entries": str(plan.entries),
                "cutoff": _iso(plan.cutoff_ns),
                "anchor": key,
                "anchor_hash": anchor.hash,
            },
            at_ns=self._clock(),
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO audit_anchor (seq, hash, recorded_ns, entries_purged, cutoff_ns, checkpoint_key, "
                "created_ns) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                anchor.seq,
                bytes(row["hash"]),
                anchor.recorded_ns,
                plan.entries,
                plan.cutoff_ns,
                key,
                anchor.created_ns,
            )
            await record_checkpoint(conn, anchor, key)
            await conn.execute("SELECT set_config('argus.audit_purge', 'on', true)")
            granted = not await conn.fetchval("SELECT has_table_privilege('audit_log', 'DELETE')")
            if granted:
                await conn.execute("GRANT DELETE ON audit_log TO CURRENT_USER")
            status = await conn.execute("DELETE FROM audit_log WHERE seq <= $1", plan.through_seq)
            if granted:
                await conn.execute("REVOKE DELETE ON audit_log FROM CURRENT_USER")
            await conn.execute("SELECT set_config('argus.audit_purge', 'off', true)")
            result = await self._appender.append_in(conn, [event])
        self._appender.record(result)
        deleted = int(status.split()[-1])
        self._metrics.purged.inc(deleted)
        log.info(
            "purged audit entries %d to %d (%d entries recorded before %s); anchor %s",
            plan.from_seq,
            plan.through_seq,
            deleted,
            _iso(plan.cutoff_ns),
            key,
            extra={"through_seq": plan.through_seq, "entries": deleted},
        )
        return PurgeResult(plan, False, anchor_key=key, event_id=event.id)

    async def run(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Purge once now and then every `interval_s` until stopping; failures are logged and retried next time."""
        while not stopping.is_set():
            try:
                await self.purge()
            except PurgeRefused as exc:
                log.error("%s", exc)  # noqa: TRY400 - the finding is the news
            except (StorageError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.error("audit purge failed: %s: %s", type(exc).__name__, exc)  # noqa: TRY400
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
