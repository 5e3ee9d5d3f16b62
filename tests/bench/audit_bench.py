"""audit benchmark: append rate with the hash chain, end to end from the stream, and verification time.

    python -m tests.bench.audit_bench --events 100000 --verify-entries 1000000

Starts its own nats-server (JetStream, file store) and Postgres (`--durable` turns fsync on, as in production;
the default is the test servers' fsync off). Then:

1. append, stream first: `--events` audit events are published to the AUDIT stream (as the services' emitters do,
   JetStream-acknowledged, many in flight), then the audit consumer (`AuditConsumer` with `ChainAppender`, in this
   process, batches of `--batch`) drains the stream into the chain: fetch, decode, lock, de-duplicate, hash, COPY,
   commit, ack. The rate is events committed and acknowledged per second of draining;
2. append, live: producers publish and the consumer appends at the same time; the rate is events over the time
   from the first publish to the last commit;
3. verification: `--verify-entries` entries are generated (bodies and hashes in Python, written with COPY) into a
   fresh database, then `verify_log` walks the whole chain.

Not a pytest test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from argus_audit.appender import ChainAppender
from argus_audit.consumer import AuditConsumer
from argus_core.audit.chain import GENESIS, entry_hash
from argus_core.audit.verify import verify_log
from argus_core.bus import Bus, encode, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_CONSUMER, AUDIT_STREAM
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_devstack.backends import PostgresHandle, new_nats_server, new_postgres_server

T0 = 1_767_225_600_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def sample_event(i: int, service: str = "liveview") -> m.AuditEvent:
    return m.AuditEvent(
        id=uuid.uuid4().hex,
        at_ns=T0 + i * 1000,
        service=service,
        actor=m.Actor(subject=f"op-{i % 40}", roles=("operator",), client="10.20.30.40 Mozilla/5.0 (X11; Linux)"),
        action="playback.clip" if i % 3 else "live.view.start",
        outcome="success",
        camera=f"cam-{i % 500}",
        footage_start_ns=T0 - 3_600_000_000_000 if i % 3 else None,
        footage_end_ns=T0 - 3_000_000_000_000 if i % 3 else None,
        reason="incident review",
        reference=f"INC-{i % 997}",
    )


async def publish(bus: Bus, n: int, *, in_flight: int = 256, start: int = 0) -> float:
    """Publish n events with up to `in_flight` unacknowledged; the seconds it took."""
    began = time.perf_counter()
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with slots:
            event = sample_event(i)
            await bus.js.publish(
                s.AUDIT.format(service=event.service),
                encode(s.AUDIT, event),
                headers={"Nats-Msg-Id": event.id},
                timeout=30,
            )

    for block in range(start, start + n, 5000):
        await asyncio.gather(*(one(i) for i in range(block, min(block + 5000, start + n))))
    return time.perf_counter() - began


async def drain_into_chain(bus: Bus, pool: asyncpg.Pool, expected: int, batch: int) -> float:
    """Run the consumer until `expected` entries are stored and acked; the seconds it took."""
    stopping = asyncio.Event()
    subscription = await bus.js.pull_subscribe_bind(durable=AUDIT_CONSUMER, stream=AUDIT_STREAM)
    consumer = AuditConsumer(subscription, ChainAppender(pool), stopping, batch=batch, fetch_wait_s=0.5)
    began = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    try:
        while consumer.stored < expected:
            if task.done():
                task.result()
                raise RuntimeError("the consumer stopped early")
            await asyncio.sleep(0.01)
        return time.perf_counter() - began
    finally:
        stopping.set()
        await task


async def fresh_pool(server: PostgresHandle, name: str) -> asyncpg.Pool:
    server.create_database(name)
    pool = await create_pool(DatabaseConfig(url=server.dsn(name), pool_max=4, command_timeout_s=600))
    await migrate(pool)
    return pool


async def bench_append(nats_url: str, pg: PostgresHandle, events: int, batch: int) -> None:
    bus = await Bus.connect(nats_url, name="audit-bench")
    try:
        await bus.ensure(topology())
        pool = await fresh_pool(pg, "append_stream_first")
        try:
            seconds = await publish(bus, events)
            out(f"publish: {events} events in {seconds:.2f} s = {events / seconds:,.0f} events/s (JetStream-acked)")
            seconds = await drain_into_chain(bus, pool, events, batch)
            out(
                f"append (stream first): {events} events in {seconds:.2f} s = {events / seconds:,.0f} events/s "
                f"(batch {batch}; fetch, hash chain, COPY, commit, ack)"
            )
            report = await verify_log(pool)
            if not report.ok or report.head_seq != events:
                raise RuntimeError(report.summary())
        finally:
            await pool.close()
        pool = await fresh_pool(pg, "append_live")
        try:
            began = time.perf_counter()
            producer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bench.audit_bench",
                "--role",
                "producer",
                "--nats",
                nats_url,
                "--events",
                str(events),
                "--start",
                str(events),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
            )
            await drain_into_chain(bus, pool, events, batch)
            seconds = time.perf_counter() - began
            produced, _ = await producer.communicate()
            out(f"  {produced.decode().strip()}")
            out(
                f"append (live: a producer process publishing while the consumer appends): {events} events in "
                f"{seconds:.2f} s = {events / seconds:,.0f} events/s end to end"
            )
            if not (report := await verify_log(pool)).ok:
                raise RuntimeError(report.summary())
        finally:
            await pool.close()
    finally:
        await bus.drain()


def _rows(start: int, count: int, prev: bytes) -> tuple[list[tuple[int, int, bytes, bytes, str]], bytes]:
    from argus_core.audit.chain import canonical_body

    rows = []
    for seq in range(start, start + count):
        body = canonical_body(sample_event(seq))
        recorded = T0 + seq * 1000
        digest = entry_hash(seq, recorded, prev, body.encode())
        rows.append((seq, recorded, prev, digest, body))
        prev = digest
    return rows, prev


async def bench_verify(pg: PostgresHandle, entries: int) -> None:
    pool = await fresh_pool(pg, "verify")
    try:
        began = time.perf_counter()
        prev = GENESIS
        chunk = 50_000
        async with pool.acquire() as conn:
            for start in range(1, entries + 1, chunk):
                rows, prev = _rows(start, min(chunk, entries + 1 - start), prev)
                await conn.copy_records_to_table(
                    "audit_log", records=rows, columns=("seq", "recorded_ns", "prev_hash", "hash", "body")
                )
            await conn.execute("VACUUM ANALYZE audit_log")
        size = await pool.fetchval("SELECT pg_size_pretty(pg_total_relation_size('audit_log'))")
        out(f"generate: {entries} entries in {time.perf_counter() - began:.1f} s with COPY ({size} with indexes)")
        for attempt in (1, 2):
            report = await verify_log(pool)
            if not report.ok or report.entries != entries:
                raise RuntimeError(report.summary())
            out(
                f"verify (run {attempt}): {entries} entries in {report.elapsed_s:.2f} s = "
                f"{entries / report.elapsed_s:,.0f} entries/s"
            )
    finally:
        await pool.close()


async def producer(args: argparse.Namespace) -> int:
    bus = await Bus.connect(args.nats, name="audit-bench-producer")
    try:
        seconds = await publish(bus, args.events, start=args.start)
    finally:
        await bus.drain()
    out(f"producer process: {args.events} events published in {seconds:.2f} s = {args.events / seconds:,.0f}/s")
    return 0


async def main(args: argparse.Namespace) -> int:
    if args.role == "producer":
        return await producer(args)
    nats = new_nats_server()
    pg = new_postgres_server(fast=not args.durable)
    with contextlib.ExitStack() as stack:
        stack.callback(nats.close)
        stack.callback(pg.close)
        await asyncio.to_thread(nats.start)
        await asyncio.to_thread(pg.start)
        out(
            f"audit bench: {os.cpu_count()} cores, Postgres fsync {'on' if args.durable else 'off'}, "
            "nats-server JetStream file store"
        )
        if args.events:
            await bench_append(nats.url, pg, args.events, args.batch)
        if args.verify_entries:
            await bench_verify(pg, args.verify_entries)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--durable", action="store_true", help="Postgres with fsync on")
    parser.add_argument("--role", choices=("bench", "producer"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--nats", default="", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(parser.parse_args())))
