"""`python -m argus_audit <command>`: verify the log, write a checkpoint, purge, make a signing key.

    verify [--no-checkpoints] [--json]   walk the chain and compare it with the signed checkpoints;
                                         exit 0 if intact, 1 naming the first entry changed, removed or inserted
    checkpoint                           sign and upload a checkpoint of the head now
    purge [--dry-run] [--now ISO-8601]   remove entries older than ARGUS_AUDIT_RETENTION_YEARS (audited)
    keygen PATH                          write a new Ed25519 signing key to PATH and its public key beside it
                                         (same name, extension .pub; the key id is the name without extension)

The commands read the service's environment (`ARGUS_DB_URL`, `ARGUS_S3_*`, `ARGUS_AUDIT_*`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec

from argus_audit.appender import ChainAppender
from argus_audit.checkpointer import Checkpointer
from argus_audit.config import Config
from argus_audit.purge import Purger, PurgeRefused
from argus_audit.service import load_keys
from argus_core.audit.checkpoints import CheckpointError, CheckpointStore, generate_signing_key
from argus_core.audit.verify import CheckpointSource, verify_log
from argus_core.config import load_config
from argus_core.db import create_pool
from argus_core.errors import ConfigError
from argus_core.logs import setup_logging
from argus_core.storage import ObjectStore

COMMANDS = ("verify", "checkpoint", "purge", "keygen")


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
    return int(when.timestamp() * 1_000_000) * 1000


async def _verify(config: Config, use_checkpoints: bool, as_json: bool) -> int:
    _, keys = load_keys(config)
    pool = await create_pool(config.db)
    store = ObjectStore(config.s3) if use_checkpoints else None
    try:
        source = CheckpointSource(CheckpointStore(store, config.s3.audit_bucket), keys) if store is not None else None
        if source is not None and not keys:
            _err(
                "no checkpoint keys configured (ARGUS_AUDIT_SIGNING_KEY or ARGUS_AUDIT_PUBLIC_KEYS): every checkpoint "
                "will be reported as signed with an unknown key; use --no-checkpoints to skip them"
            )
        report = await verify_log(pool, source)
    finally:
        if store is not None:
            await store.close()
        await pool.close()
    _out(msgspec.json.encode(report).decode() if as_json else report.summary())
    return 0 if report.ok else 1


async def _checkpoint(config: Config) -> int:
    signer, _ = load_keys(config)
    if signer is None:
        _err("ARGUS_AUDIT_SIGNING_KEY is not set")
        return 2
    pool = await create_pool(config.db)
    store = ObjectStore(config.s3)
    try:
        checkpoint = await Checkpointer(pool, CheckpointStore(store, config.s3.audit_bucket), signer).write("manual")
    finally:
        await store.close()
        await pool.close()
    _out(f"checkpoint at entry {checkpoint.seq} written" if checkpoint else "the newest entry is already checkpointed")
    return 0


async def _purge(config: Config, dry_run: bool, now_ns: int | None) -> int:
    signer, keys = load_keys(config)
    if signer is None:
        _err("ARGUS_AUDIT_SIGNING_KEY is not set: a purge needs it to sign the new anchor")
        return 2
    pool = await create_pool(config.db)
    store = ObjectStore(config.s3)
    try:
        purger = Purger(
            pool,
            ChainAppender(pool),
            CheckpointStore(store, config.s3.audit_bucket),
            signer,
            keys,
            retention_years=config.audit.retention_years,
        )
        try:
            result = await purger.purge(now_ns, dry_run=dry_run)
        except PurgeRefused as exc:
            _err(str(exc))
            return 1
    finally:
        await store.close()
        await pool.close()
    plan = result.plan
    if plan.entries == 0:
        _out("nothing to purge")
    elif dry_run:
        _out(f"would purge entries {plan.from_seq} to {plan.through_seq} ({plan.entries} entries)")
    else:
        _out(f"purged entries {plan.from_seq} to {plan.through_seq} ({plan.entries}); anchor {result.anchor_key}")
    return 0


def _keygen(path: Path) -> int:
    public_path = path.with_suffix(".pub")  # same stem, so the same key id
    for existing in (path, public_path):
        if existing.exists() or public_path == path:
            _err(f"{existing} exists (or the key would be its own public key); not overwriting a key")
            return 2
    private, public = generate_signing_key()
    path.touch(mode=0o600)
    path.write_bytes(private)
    public_path.write_bytes(public)
    _out(f"signing key {path} (key id {path.stem}), public key {public_path}")
    return 0


def command(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m argus_audit", description="Argus audit log tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify the chain and the signed checkpoints")
    verify.add_argument("--no-checkpoints", action="store_true", help="walk the chain only")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("checkpoint", help="write a signed checkpoint of the head now")
    purge = sub.add_parser("purge", help="remove entries older than the audit retention")
    purge.add_argument("--dry-run", action="store_true")
    purge.add_argument("--now", type=_parse_time, default=None, help="ISO 8601 time to purge as of")
    keygen = sub.add_parser("keygen", help="make an Ed25519 checkpoint signing key")
    keygen.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return _keygen(args.path)
    env = os.environ if environ is None else environ
    setup_logging("audit-cli", "warning", "text")
    try:
        config = load_config(Config, env)
    except ConfigError as exc:
        _err(f"invalid configuration: {exc}")
        return 2
    try:
        if args.command == "verify":
            return asyncio.run(_verify(config, not args.no_checkpoints, args.json))
        if args.command == "checkpoint":
            return asyncio.run(_checkpoint(config))
        return asyncio.run(_purge(config, args.dry_run, args.now))
    except CheckpointError as exc:
        _err(f"invalid configuration: {exc}")
        return 2
