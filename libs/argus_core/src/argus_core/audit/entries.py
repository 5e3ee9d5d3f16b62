"""Reading the audit log: search by actor, camera, action, service, outcome, event time and footage time, in
chain order, and the CSV and JSON-lines exports for a regulator.

The JSON-lines export carries each entry's chain fields and its body exactly as hashed, so a recipient can check
the chain without Argus: `sha256(b"argus-audit-v1\\n" + seq + "\\n" + recorded_ns + "\\n" + prev_hash + body)`
(see `argus_core.audit.chain`). The CSV export is for reading: one column per field, times in ISO 8601 UTC, and
a text cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return)
is prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import asyncpg
import msgspec

from argus_core.bus.messages import AuditEvent

MAX_PAGE = 1000

_DECODER = msgspec.json.Decoder(AuditEvent)
_JSON = msgspec.json.Encoder()
_SORTED = msgspec.json.Encoder(order="sorted")


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A search of the log. `action` matches exactly, or as a prefix when it ends with `*` (`playback.*`); event
    time is `since_ns <= at_ns < until_ns`; the footage range matches entries whose footage overlaps it."""

    actor: str | None = None
    camera: str | None = None
    action: str | None = None
    service: str | None = None
    outcome: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    footage_from_ns: int | None = None
    footage_until_ns: int | None = None
    after_seq: int = 0


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    recorded_ns: int
    prev_hash: str  # hex
    hash: str  # hex
    body: str  # canonical JSON, exactly as hashed
    event: AuditEvent | None  # None only if the stored body no longer decodes


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where_clause(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SQL condition and its arguments ($1...) for `query`."""
    parts: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    parts.append(f"seq > {arg(query.after_seq)}")
    if query.actor is not None:
        parts.append(f"actor = {arg(query.actor)}")
    if query.camera is not None:
        parts.append(f"camera = {arg(query.camera)}")
    if query.action is not None:
        if query.action.endswith("*"):
            parts.append(f"action LIKE {arg(_like_prefix(query.action[:-1]))}")
        else:
            parts.append(f"action = {arg(query.action)}")
    if query.service is not None:
        parts.append(f"(body::jsonb ->> 'service') = {arg(query.service)}")
    if query.outcome is not None:
        parts.append(f"(body::jsonb ->> 'outcome') = {arg(query.outcome)}")
    if query.since_ns is not None:
        parts.append(f"at_ns >= {arg(query.since_ns)}")
    if query.until_ns is not None:
        parts.append(f"at_ns < {arg(query.until_ns)}")
    if query.footage_from_ns is not None:
        parts.append(f"((body::jsonb ->> 'footage_end_ns')::bigint) > {arg(query.footage_from_ns)}")
    if query.footage_until_ns is not None:
        parts.append(f"((body::jsonb ->> 'footage_start_ns')::bigint) < {arg(query.footage_until_ns)}")
    return " AND ".join(parts), args


def _entry(record: asyncpg.Record) -> AuditEntry:
    body: str = record["body"]
    try:
        event: AuditEvent | None = _DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        event = None
    return AuditEntry(
        seq=record["seq"],
        recorded_ns=record["recorded_ns"],
        prev_hash=bytes(record["prev_hash"]).hex(),
        hash=bytes(record["hash"]).hex(),
        body=body,
        event=event,
    )


async def fetch_entries(
    conn: asyncpg.Connection | asyncpg.Pool, query: AuditQuery, limit: int = 100
) -> list[AuditEntry]:
    """Up to `limit` (at most MAX_PAGE) entries matching `query`, in chain order, after `query.after_seq`."""
    where, args = where_clause(query)
    args.append(max(1, min(limit, MAX_PAGE)))
    records = await conn.fetch(
        f"SELECT seq, recorded_ns, prev_hash, hash, body FROM audit_log WHERE {where} ORDER BY seq LIMIT ${len(args)}",
        *args,
    )
    return [_entry(r) for r in records]


async def iter_entries(
    pool: asyncpg.Pool, query: AuditQuery, *, chunk: int = MAX_PAGE
) -> AsyncIterator[list[AuditEntry]]:
    """Every entry matching `query`, in chain order, a chunk at a time (keyset pagination: no long transaction)."""
    after = query.after_seq
    while True:
        page = await fetch_entries(pool, msgspec.structs.replace(query, after_seq=after), chunk)
        if not page:
            return
        yield page
        if len(page) < chunk:
            return
        after = page[-1].seq


# --- formats ----------------------------------------------------------------------------------------------------


def iso_ns(ns: int | None) -> str:
    """ISO 8601 UTC with nanoseconds (`2025-03-01T09:30:00.123456789Z`); empty for None."""
    if ns is None:
        return ""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An entry for the HTTP API and the JSON-lines export: chain fields, the exact body, the decoded event."""
    return {
        "seq": entry.seq,
        "recorded_ns": entry.recorded_ns,
        "recorded_at": iso_ns(entry.recorded_ns),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "body": entry.body,
        "event": msgspec.to_builtins(entry.event) if entry.event is not None else None,
    }


def jsonl(entries: Iterable[AuditEntry]) -> bytes:
    return b"".join(_JSON.encode(entry_json(e)) + b"\n" for e in entries)


CSV_COLUMNS = (
    "seq",
    "recorded_at",
    "at",
    "event_id",
    "service",
    "actor",
    "roles",
    "client",
    "action",
    "outcome",
    "camera",
    "target",
    "footage_start",
    "footage_end",
    "reason",
    "reference",
    "details",
    "prev_hash",
    "hash",
)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(entry: AuditEntry) -> list[str]:
    e = entry.event
    if e is None:
        return (
            [str(entry.seq), iso_ns(entry.recorded_ns)] + [""] * 14 + [_cell(entry.body), entry.prev_hash, entry.hash]
        )
    return [
        str(entry.seq),
        iso_ns(entry.recorded_ns),
        iso_ns(e.at_ns),
        _cell(e.id),
        _cell(e.service),
        _cell(e.actor.subject),
        _cell(";".join(e.actor.roles)),
        _cell(e.actor.client),
        _cell(e.action),
        e.outcome,
        _cell(e.camera),
        _cell(e.target),
        iso_ns(e.footage_start_ns),
        iso_ns(e.footage_end_ns),
        _cell(e.reason),
        _cell(e.reference),
        _cell(_SORTED.encode(e.details).decode()) if e.details else "",
        entry.prev_hash,
        entry.hash,
    ]


def csv_text(entries: Sequence[AuditEntry], *, header: bool = False) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_row(e) for e in entries)
    return out.getvalue()
