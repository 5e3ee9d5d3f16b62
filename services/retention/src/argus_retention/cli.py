"""`python -m argus_retention <command>`: run a sweep, a dry run, a reconcile or a legal-hold sync now.

    sweep [--now ISO-8601] [--json]          delete what has expired (audited, as the service's sweeps are);
                                             exit 0 when done, 3 if another sweep holds the lock
    dry-run [--now ISO-8601] [--json]        what a sweep would delete per camera, and what holds keep back
    reconcile [--repair] [--json]            compare objects and rows; with --repair delete the orphans
    legal-holds [--json]                     bring S3 legal holds in line with the evidence holds

The commands read the service's environment (`ARGUS_DB_URL`, `ARGUS_S3_*`, `ARGUS_NATS_URL`, `ARGUS_RETENTION_*`).
`--now` judges expiry at another time than the clock's (for a test, or to see what next week's sweep will do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus, topology
from argus_core.config import load_config
from argus_core.db import create_pool, migrate
from argus_core.errors import ConfigError
from argus_core.logs import setup_logging
from argus_core.storage import ObjectStore
from argus_retention.config import Config
from argus_retention.errors import LegalHoldUnavailable, SweepBusy
from argus_retention.legalholds import legal_holds_for
from argus_retention.objects import RecordingObjects
from argus_retention.reconcile import Reconciler
from argus_retention.sweep import Sweeper
from argus_retention.times import Clock, iso, ns_of, system_clock, utc

COMMANDS = ("sweep", "dry-run", "reconcile", "legal-holds")
SERVICE = "retention"


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _parse_time(text: str) -> int:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z for UTC)")
    return ns_of(when)


def _clock(now_ns: int | None) -> Clock:
    if now_ns is None:
        return system_clock
    return lambda: now_ns


def _json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=lambda o: iso(o) if isinstance(o, dt.datetime) else str(o)).decode()


async def _sweep(config: Config, now_ns: int | None, as_json: bool) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    pool = await create_pool(config.db)
    store = ObjectStore(config.s3)
    bus: Bus | None = None
    try:
        await migrate(pool)
        bus = await Bus.connect(config.nats_url, name=f"{SERVICE}-cli@{config.pod_name}")
        await bus.ensure(topology(config.topology_options()))
        objects = await RecordingObjects.open(store, config.s3.recordings_bucket)
        clock = _clock(now_ns)
        legal = await legal_holds_for(config.retention.legal_holds, pool, store, config.s3.recordings_bucket)
        sweeper = Sweeper(
            pool,
            objects,
            clock=clock,
            emitter=AuditEmitter(bus, SERVICE),
            pod=config.pod_name,
            batch=config.retention.batch,
            parallel=config.retention.parallel,
            drop_days=config.retention.drop_days,
            legal_holds=legal,
            stopping=stopping,
        )
        try:
            result = await sweeper.sweep()
        except SweepBusy as exc:
            _err(str(exc))
            return 3
    except LegalHoldUnavailable as exc:
        _err(str(exc))
        return 2
    finally:
        if bus is not None:
            await bus.drain()
        await store.close()
        await pool.close()
    if as_json:
        _out(_json(result))
    else:
        _out(
            f"sweep {result.sweep_id} {result.state} in {result.seconds:.1f} s: {result.segments} segments "
            f"({result.bytes} bytes) from {len(result.cameras)} cameras, {result.partitions} days dropped whole, "
            f"{result.inits} init segments, {result.gaps} gaps, {result.refused} refused by the store"
        )
    return 0


async def _dry_run(config: Config, now_ns: int | None, as_json: bool) -> int:
    pool = await create_pool(config.db)
    try:
        now = utc(now_ns if now_ns is not None else system_clock())
        rows = await pool.fetch("SELECT * FROM argus_retention_dry_run($1)", now)
    finally:
        await pool.close()
    cameras = [dict(r.items()) for r in rows]
    if as_json:
        _out(_json({"at": iso(now), "cameras": cameras}))
        return 0
    _out(f"a sweep at {iso(now)} would delete:")
    for c in cameras:
        _out(
            f"  {c['camera']}: {c['segments']} segments, {c['bytes']} bytes (keeps {c['days']} days, "
            f"{c['scope']} policy); {c['held_segments']} expired segments ({c['held_bytes']} bytes) are held"
        )
    _out(f"total: {sum(c['segments'] for c in cameras)} segments, {sum(c['bytes'] for c in cameras)} bytes")
    return 0


async def _reconcile(config: Config, repair: bool, as_json: bool) -> int:
    pool = await create_pool(config.db)
    store = ObjectStore(config.s3)
    bus: Bus | None = None
    try:
        bus = await Bus.connect(config.nats_url, name=f"{SERVICE}-cli@{config.pod_name}")
        await bus.ensure(topology(config.topology_options()))
        objects = await RecordingObjects.open(store, config.s3.recordings_bucket)
        reconciler = Reconciler(
            pool,
            objects,
            emitter=AuditEmitter(bus, SERVICE),
            grace_s=config.retention.reconcile_grace_s,
        )
        try:
            report = await reconciler.run(repair=repair)
        except SweepBusy as exc:
            _err(str(exc))
            return 3
    finally:
        if bus is not None:
            await bus.drain()
        await store.close()
        await pool.close()
    _out(_json(report) if as_json else report.summary())
    return 0 if report.clean or repair else 1


async def _legal_holds(config: Config, as_json: bool) -> int:
    pool = await create_pool(config.db)
    store = ObjectStore(config.s3)
    try:
        legal = await legal_holds_for("on", pool, store, config.s3.recordings_bucket)
        assert legal is not None
        report = await legal.sync()
    except LegalHoldUnavailable as exc:
        _err(str(exc))
        return 2
    finally:
        await store.close()
        await pool.close()
    _out(_json(report) if as_json else f"legal holds: {report.applied} applied, {report.released} released")
    return 0 if not report.failed else 1


def command(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="argus-retention", description="Argus retention tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="delete expired footage now")
    p.add_argument("--now", type=_parse_time, default=None, help="judge expiry at this time (ISO 8601, with zone)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("dry-run", help="what a sweep would delete")
    p.add_argument("--now", type=_parse_time, default=None)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("reconcile", help="find objects without rows and rows without objects")
    p.add_argument("--repair", action="store_true", help="delete them (objects past the grace period only)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("legal-holds", help="bring S3 legal holds in line with the evidence holds")
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        config = load_config(Config, env)
    except ConfigError as exc:
        _err(f"invalid configuration: {exc}")
        return 2
    setup_logging(SERVICE, config.log_level, config.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "sweep":
            return asyncio.run(_sweep(config, args.now, args.json))
        if args.command == "dry-run":
            return asyncio.run(_dry_run(config, args.now, args.json))
        if args.command == "reconcile":
            return asyncio.run(_reconcile(config, args.repair, args.json))
        return asyncio.run(_legal_holds(config, args.json))
    return 130
