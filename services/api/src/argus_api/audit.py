"""The audit log over HTTP: search, export for a regulator, verification. Only the `auditor` role reads it.

    GET /api/v1/audit/entries   ?actor= &camera= &action= (exact, or a prefix ending in *) &service= &outcome=
                                &from= &until= (event time) &footage_from= &footage_until= (footage overlap)
                                &after= (seq, for the next page) &limit= (1-1000, default 100)
    GET /api/v1/audit/export    the same filters and &format=csv|jsonl: every match, streamed
    GET /api/v1/audit/verify    ?checkpoints=true|false: walk the chain and compare it with the signed checkpoints

Times are ISO 8601 with a zone (`2025-03-01T09:00:00Z`) or seconds since the epoch. Any other role gets 403,
whatever its grants: nobody but an auditor reads the log, and nobody at all changes it (there is no route that
could). Every read, and every refused attempt, is itself audited when an emitter is set (`EMITTER_KEY`); if that
event cannot be stored the read is refused with 503, since a look at the log that is not logged must not happen.

Wiring (in the api's service): `audit.routes(app)` in `build_app`; in `run`, after the bus, pool and store are
open, `audit.setup(app, store=store, keys=CheckpointKeys.from_files(config.audit.public_keys),
emitter=AuditEmitter(bus, SERVICE))`. The pool is the camera routes' `cameras.POOL_KEY`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import typing
from typing import Any

import msgspec
from aiohttp import web

from argus_api.cameras import POOL_KEY
from argus_core.audit.checkpoints import CheckpointKeys, CheckpointStore
from argus_core.audit.emitter import AuditEmitter, AuditUnavailable
from argus_core.audit.entries import MAX_PAGE, AuditQuery, csv_text, entry_json, fetch_entries, iter_entries, jsonl
from argus_core.audit.verify import CheckpointSource, verify_log
from argus_core.bus.messages import Outcome
from argus_core.http import Problem, identity_of
from argus_core.identity import Identity
from argus_core.storage import ObjectStore

AUDITOR_ROLE = "auditor"
OUTCOMES: tuple[str, ...] = typing.get_args(Outcome)
EXPORT_CHUNK = 2000

STORE_KEY = web.AppKey("argus.api.audit.store", ObjectStore)
CHECKPOINT_KEYS_KEY = web.AppKey("argus.api.audit.checkpoint_keys", CheckpointKeys)
EMITTER_KEY = web.AppKey("argus.api.audit.emitter", AuditEmitter)
VERIFY_LOCK_KEY = web.AppKey("argus.api.audit.verify_lock", asyncio.Lock)

_FILTERS = ("actor", "camera", "action", "service", "outcome", "from", "until", "footage_from", "footage_until")


def setup(
    app: web.Application,
    *,
    store: ObjectStore | None = None,
    keys: CheckpointKeys | None = None,
    emitter: AuditEmitter | None = None,
) -> None:
    """Give the routes what they use besides the pool: the store and keys for checkpoints, the emitter."""
    if store is not None:
        app[STORE_KEY] = store
    if keys is not None:
        app[CHECKPOINT_KEYS_KEY] = keys
    if emitter is not None:
        app[EMITTER_KEY] = emitter


def _client(request: web.Request) -> str:
    agent = request.headers.get("User-Agent", "")
    return f"{request.remote or ''} {agent}".strip()[:256]


async def _audit(
    request: web.Request,
    identity: Identity,
    action: str,
    *,
    outcome: Outcome = "success",
    details: dict[str, str] | None = None,
) -> None:
    emitter = request.app.get(EMITTER_KEY)
    if emitter is None:
        return
    try:
        await emitter.emit(action, actor=identity, outcome=outcome, client=_client(request), details=details)
    except AuditUnavailable as exc:
        raise Problem(503, "Service Unavailable", "this access to the audit log cannot be recorded now") from exc


async def _auditor(request: web.Request, action: str) -> Identity:
    identity = identity_of(request)
    if not identity.has_role(AUDITOR_ROLE):
        await _audit(request, identity, action, outcome="denied", details={"path": request.path_qs[:512]})
        raise Problem(403, "Forbidden", "only the auditor role reads the audit log", role=AUDITOR_ROLE)
    return identity


def _time_ns(name: str, text: str) -> int:
    try:
        return int(float(text) * 1_000_000) * 1000
    except (ValueError, OverflowError):
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise Problem(400, "Bad Request", f"{name}: not an ISO 8601 time or epoch seconds", parameter=name) from exc
    if when.tzinfo is None:
        raise Problem(400, "Bad Request", f"{name}: give a time zone (Z for UTC)", parameter=name)
    return int(when.timestamp() * 1_000_000) * 1000


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise Problem(400, "Bad Request", f"{name}: not an integer", parameter=name) from exc
    if not low <= value <= high:
        raise Problem(400, "Bad Request", f"{name}: must be from {low} to {high}", parameter=name)
    return value


def _query(request: web.Request) -> AuditQuery:
    q = request.query

    def text(name: str) -> str | None:
        value = q.get(name)
        return value if value else None

    def when(name: str) -> int | None:
        value = q.get(name)
        return _time_ns(name, value) if value else None

    outcome = text("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise Problem(400, "Bad Request", f"outcome: one of {', '.join(OUTCOMES)}", parameter="outcome")
    return AuditQuery(
        actor=text("actor"),
        camera=text("camera"),
        action=text("action"),
        service=text("service"),
        outcome=outcome,
        since_ns=when("from"),
        until_ns=when("until"),
        footage_from_ns=when("footage_from"),
        footage_until_ns=when("footage_until"),
        after_seq=_int("after", q["after"], 0, 2**63 - 1) if q.get("after") else 0,
    )


def _filters(request: web.Request) -> dict[str, str]:
    return {name: request.query[name][:256] for name in _FILTERS if request.query.get(name)}


async def list_entries(request: web.Request) -> web.Response:
    identity = await _auditor(request, "audit.query")
    query = _query(request)
    limit = _int("limit", request.query["limit"], 1, MAX_PAGE) if request.query.get("limit") else 100
    await _audit(request, identity, "audit.query", details=_filters(request))
    entries = await fetch_entries(request.app[POOL_KEY], query, limit)
    body: dict[str, Any] = {
        "entries": [entry_json(e) for e in entries],
        "next_after": entries[-1].seq if len(entries) == limit else None,
    }
    return web.json_response(body, dumps=lambda obj: msgspec.json.encode(obj).decode())


async def export(request: web.Request) -> web.StreamResponse:
    identity = await _auditor(request, "audit.export")
    fmt = request.query.get("format", "jsonl")
    if fmt not in ("csv", "jsonl"):
        raise Problem(400, "Bad Request", "format: csv or jsonl", parameter="format")
    query = _query(request)
    await _audit(request, identity, "audit.export", details={"format": fmt, **_filters(request)})
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="argus-audit-{stamp}.{fmt}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    header = True
    try:
        async for page in iter_entries(request.app[POOL_KEY], query, chunk=EXPORT_CHUNK):
            if fmt == "csv":
                await response.write(csv_text(page, header=header).encode())
            else:
                await response.write(jsonl(page))
            header = False
        if fmt == "csv" and header:
            await response.write(csv_text([], header=True).encode())
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nothing to answer
    return response


async def verify(request: web.Request) -> web.Response:
    identity = await _auditor(request, "audit.verify")
    wanted = request.query.get("checkpoints", "true").lower()
    if wanted not in ("true", "false", "1", "0"):
        raise Problem(400, "Bad Request", "checkpoints: true or false", parameter="checkpoints")
    store = request.app.get(STORE_KEY)
    keys = request.app.get(CHECKPOINT_KEYS_KEY)
    source = None
    if wanted in ("true", "1") and store is not None and keys:
        source = CheckpointSource(CheckpointStore(store, store.config.audit_bucket), keys)
    async with request.app[VERIFY_LOCK_KEY]:  # one walk at a time per api process
        report = await verify_log(request.app[POOL_KEY], source)
    details = {"ok": str(report.ok).lower(), "head_seq": str(report.head_seq)}
    if report.problem is not None:
        details["problem"] = f"{report.problem.kind} at {report.problem.seq}"
    await _audit(request, identity, "audit.verify", details=details)
    return web.json_response(msgspec.to_builtins(report))


def routes(app: web.Application) -> None:
    app[VERIFY_LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/api/v1/audit/entries", list_entries)
    app.router.add_get("/api/v1/audit/export", export)
    app.router.add_get("/api/v1/audit/verify", verify)
