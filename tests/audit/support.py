"""Shared helpers of the audit tests: events, a controllable clock, tampering as a superuser would."""

from __future__ import annotations

import asyncpg

from argus_core.audit.chain import entry_hash
from argus_core.audit.emitter import new_event
from argus_core.bus import messages as m

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
NS_PER_DAY = 86_400 * 1_000_000_000


class Clock:
    """A clock the test moves by hand (nanoseconds since the epoch)."""

    def __init__(self, start_ns: int = T0) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1_000_000_000)


def events(
    n: int,
    *,
    actor: str = "op-1",
    camera: str = "cam-1",
    action: str = "live.view.start",
    service: str = "liveview",
    at_ns: int = T0,
) -> list[m.AuditEvent]:
    return [
        new_event(
            service,
            action,
            actor=m.Actor(subject=actor, roles=("operator",), client="10.0.0.7 test"),
            camera=camera,
            reason=f"test {i}",
            at_ns=at_ns + i,
        )
        for i in range(n)
    ]


async def tamper(pool: asyncpg.Pool, *statements: str) -> None:
    """Run SQL with the append-only triggers bypassed, as only a superuser can (session_replication_role)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            await conn.execute(sql)


async def rehash(pool: asyncpg.Pool, seq: int) -> None:
    """Recompute entry `seq`'s hash from its (changed) content, as a careful forger would."""
    row = await pool.fetchrow("SELECT recorded_ns, prev_hash, body FROM audit_log WHERE seq = $1", seq)
    assert row is not None
    digest = entry_hash(seq, row["recorded_ns"], bytes(row["prev_hash"]), row["body"].encode())
    await tamper(pool, f"UPDATE audit_log SET hash = '\\x{digest.hex()}' WHERE seq = {seq}")


async def rehash_from(pool: asyncpg.Pool, seq: int) -> None:
    """Recompute every hash and link from entry `seq` on: a rewrite the chain alone cannot see."""
    rows = await pool.fetch("SELECT seq, recorded_ns, prev_hash, body FROM audit_log WHERE seq >= $1 ORDER BY seq", seq)
    prev = bytes(rows[0]["prev_hash"])
    statements = []
    for row in rows:
        digest = entry_hash(row["seq"], row["recorded_ns"], prev, row["body"].encode())
        statements.append(
            f"UPDATE audit_log SET prev_hash = '\\x{prev.hex()}', hash = '\\x{digest.hex()}' WHERE seq = {row['seq']}"
        )
        prev = digest
    await tamper(pool, *statements)
