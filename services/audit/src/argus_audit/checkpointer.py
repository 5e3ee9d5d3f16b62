"""Periodic signed checkpoints of the chain head, written to the audit bucket.

Every `interval_s`, if the chain grew since the newest checkpoint, the head's seq and hash are signed and uploaded
(with a legal hold where the bucket has object lock), then recorded in `audit_checkpoint`. A transaction-level
advisory lock makes the pods take turns, so each head is checkpointed once. The service also writes one when it
stops, so the newest entries are vouched for as soon as possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from argus_audit.appender import CHECKPOINT_LOCK_KEY, Connection, read_head
from argus_audit.metrics import AuditMetrics
from argus_core.audit.checkpoints import Checkpoint, CheckpointKind, CheckpointSigner, CheckpointStore
from argus_core.storage import StorageError

log = logging.getLogger(__name__)


async def record_checkpoint(conn: Connection, checkpoint: Checkpoint, key: str) -> None:
    await conn.execute(
        "INSERT INTO audit_checkpoint (seq, hash, kind, object_key, key_id, created_ns) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING",
        checkpoint.seq,
        bytes.fromhex(checkpoint.hash),
        checkpoint.kind,
        key,
        checkpoint.key_id,
        checkpoint.created_ns,
    )


class Checkpointer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: CheckpointStore,
        signer: CheckpointSigner,
        *,
        metrics: AuditMetrics | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._pool = pool
        self._store = store
        self._signer = signer
        self._metrics = metrics if metrics is not None else AuditMetrics()
        self._clock = clock

    async def write(self, kind: CheckpointKind = "periodic") -> Checkpoint | None:
        """Checkpoint the head if no checkpoint covers it yet; the checkpoint written, or None."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHECKPOINT_LOCK_KEY)
            head = await read_head(conn)
            newest = await conn.fetchval("SELECT max(seq) FROM audit_checkpoint")
            if head.seq == 0 or (newest is not None and newest >= head.seq):
                return None
            checkpoint = Checkpoint(
                seq=head.seq,
                hash=head.hash.hex(),
                recorded_ns=head.recorded_ns,
                created_ns=self._clock(),
                kind=kind,
                key_id=self._signer.key_id,
            )
            key = await self._store.write(checkpoint, self._signer)
            await record_checkpoint(conn, checkpoint, key)
        self._metrics.checkpoint_seq.set(checkpoint.seq)
        self._metrics.checkpoint_time.set(checkpoint.created_ns / 1e9)
        log.info("checkpoint at entry %d written to %s", checkpoint.seq, key, extra={"seq": checkpoint.seq})
        return checkpoint

    async def try_write(self, kind: CheckpointKind = "periodic") -> Checkpoint | None:
        """`write`, logging (not raising) a store or database failure: the next period tries again."""
        try:
            return await self.write(kind)
        except (StorageError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self._metrics.checkpoint_errors.inc()
            log.error("writing a checkpoint failed: %s: %s", type(exc).__name__, exc)  # noqa: TRY400
            return None

    async def run(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Checkpoint every `interval_s` until stopping (the service writes the final one after its last batch)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
            if not stopping.is_set():
                await self.try_write("periodic")
