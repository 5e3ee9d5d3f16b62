"""Retention over HTTP: policies, evidence holds, the dry run and storage use.

    GET    /api/v1/retention/settings                  bounds every policy must keep within, and the default
    PUT    /api/v1/retention/settings                  {"min_days", "max_days", "reason"}           configure on *
    GET    /api/v1/retention/policies                  every policy and retention group
    PUT    /api/v1/retention/policies/default          {"days", "reason"}                           configure on *
    PUT    /api/v1/retention/policies/cameras/{camera} {"days", "reason"}                           configure
    DELETE /api/v1/retention/policies/cameras/{camera} ?reason=                                     configure
    PUT    /api/v1/retention/policies/sites/{site}     {"days", "reason"}       configure on site:<id> or its cameras
    DELETE /api/v1/retention/policies/sites/{site}     ?reason=
    PUT    /api/v1/retention/groups/{group}            {"name", "description", "cameras", "days", "reason"}
    DELETE /api/v1/retention/groups/{group}            ?reason=                  configure on every member (old, new)
    GET    /api/v1/retention/cameras/{camera}          the policy that applies to a camera, and its cutoff now
    POST   /api/v1/retention/holds                     {"cameras", "from", "until", "reason", "case_reference",
                                                        "owner", "review_at"}   hold on every camera, for the range
    GET    /api/v1/retention/holds                     ?active=true|false &overdue=true &camera=
    GET    /api/v1/retention/holds/{id}
    PATCH  /api/v1/retention/holds/{id}                {"from", "until", "review_at", "reason", "case_reference",
                                                        "owner" (any of them), "change_reason"}
    POST   /api/v1/retention/holds/{id}/release        {"reason"}
    GET    /api/v1/retention/dry-run                   ?at= &camera=: what a sweep would delete, per camera
    GET    /api/v1/retention/storage                   storage use per camera (and stream) and per site

Policies need the `configure` grant, holds the `hold` grant, on the cameras concerned; reading the dry run and
storage use shows only cameras the caller may configure; a hold is listed to callers with `hold` on one of its
cameras. A hold is listed with what it protects now (segments and bytes, per camera). Every change, and every
refused attempt, is an audit event (`retention.policy.set`, `retention.hold.create`, ...); the change is committed
only once its event is on the AUDIT stream, so a change that cannot be audited does not happen (503). Bad input is
problem+json: 400 for malformed JSON or parameters, 422 for values out of bounds, 404, 409 for a conflict.

Times are ISO 8601 with a zone (`2026-03-01T09:00:00Z`) in bodies; `at` also takes epoch seconds.

Wiring (in the api's service): `retention.routes(app)` in `build_app`. The routes use the pool in
`cameras.POOL_KEY` and the audit emitter in `audit.EMITTER_KEY` (both already set up by the api), and the clock in
`CLOCK_KEY` if set (tests), else the system clock. The sweep itself is the retention service's.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from argus_api.audit import EMITTER_KEY
from argus_api.cameras import POOL_KEY
from argus_core.audit.emitter import AuditUnavailable
from argus_core.bus import messages as m
from argus_core.http import Problem, identity_of
from argus_core.identity import Action, Identity

CLOCK_KEY: web.AppKey[Callable[[], int]] = web.AppKey("argus.api.retention.clock")

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
When = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Days = Annotated[int, msgspec.Meta(ge=1, le=3650)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class PolicyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    days: Days
    reason: Reason


class SettingsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_days: Days
    max_days: Days
    reason: Reason


class GroupBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Short
    reason: Reason
    cameras: Annotated[tuple[Name, ...], msgspec.Meta(max_length=5000)] = ()
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    days: Days | None = None


class HoldBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cameras: Annotated[tuple[Name, ...], msgspec.Meta(min_length=1, max_length=200)]
    start: When = msgspec.field(name="from")
    end: When = msgspec.field(name="until")
    reason: Reason
    case_reference: Short
    owner: Short
    review_at: When


class HoldPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    change_reason: Reason
    start: When | None = msgspec.field(name="from", default=None)
    end: When | None = msgspec.field(name="until", default=None)
    review_at: When | None = None
    reason: Reason | None = None
    case_reference: Short | None = None
    owner: Short | None = None


class ReleaseBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Reason


# --- helpers ---------------------------------------------------------------------------------------------------


def _now_ns(request: web.Request) -> int:
    clock = request.app.get(CLOCK_KEY)
    return clock() if clock is not None else time.time_ns()


def _now(request: web.Request) -> dt.datetime:
    ns = _now_ns(request)
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def _ns(when: dt.datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _client(request: web.Request) -> str:
    agent = request.headers.get("User-Agent", "")
    return f"{request.remote or ''} {agent}".strip()[:256]


async def _body(request: web.Request, tp: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=tp)
    except msgspec.ValidationError as exc:
        raise Problem(422, "Unprocessable Content", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "Bad Request", f"the body must be a JSON object: {exc}") from exc


def _name(request: web.Request, part: str, what: str) -> str:
    value = request.match_info[part]
    try:
        msgspec.convert(value, Name)
    except msgspec.ValidationError:
        raise Problem(404, "Not Found", f"{value!r} is not a {what} id", **{what: value}) from None
    return value


def _query_reason(request: web.Request) -> str:
    reason = request.query.get("reason", "").strip()
    if not reason:
        raise Problem(400, "Bad Request", "reason: say why (a query parameter)", parameter="reason")
    return reason[:2000]


def _bool(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise Problem(400, "Bad Request", f"{name}: true or false", parameter=name)


def _at(request: web.Request) -> dt.datetime:
    text = request.query.get("at")
    if not text:
        return _now(request)
    try:
        return _EPOCH + dt.timedelta(seconds=float(text))
    except (ValueError, OverflowError):
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise Problem(400, "Bad Request", "at: not an ISO 8601 time or epoch seconds", parameter="at") from exc
    if when.tzinfo is None:
        raise Problem(400, "Bad Request", "at: give a time zone (Z for UTC)", parameter="at")
    return when


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL_KEY]


class _Audit:
    """Audit events of one request; `emit` raises 503 when the event cannot be stored (the change is then not
    committed: callers emit inside their transaction)."""

    def __init__(self, request: web.Request, identity: Identity) -> None:
        self._request = request
        self._identity = identity

    async def emit(
        self,
        action: str,
        *,
        outcome: m.Outcome = "success",
        camera: str = "",
        target: str = "",
        footage: tuple[dt.datetime, dt.datetime] | None = None,
        reason: str = "",
        reference: str = "",
        details: dict[str, str] | None = None,
    ) -> None:
        emitter = self._request.app.get(EMITTER_KEY)
        if emitter is None:
            raise Problem(503, "Service Unavailable", "changes to retention cannot be audited now (no audit emitter)")
        try:
            await emitter.emit(
                action,
                actor=self._identity,
                outcome=outcome,
                client=_client(self._request),
                camera=camera,
                target=target,
                footage=(_ns(footage[0]), _ns(footage[1])) if footage is not None else None,
                reason=reason[:2000],
                reference=reference,
                details=details,
            )
        except AuditUnavailable as exc:
            raise Problem(503, "Service Unavailable", "this change cannot be audited now, so it was not made") from exc


async def _require_all(
    request: web.Request,
    action: Action,
    cameras: Iterable[str],
    what: str,
    footage: tuple[dt.datetime, dt.datetime] | None = None,
) -> tuple[Identity, _Audit]:
    """The caller, if they may take `action` on every camera (for the footage range); otherwise a 403, audited."""
    identity = identity_of(request)
    audit = _Audit(request, identity)
    window = (_ns(footage[0]) / 1e9, _ns(footage[1]) / 1e9) if footage is not None else None
    refused = sorted(c for c in set(cameras) if not identity.allows(action, c, window))
    if refused:
        await audit.emit(
            what,
            outcome="denied",
            camera=refused[0] if len(refused) == 1 and ":" not in refused[0] and refused[0] != "*" else "",
            details={"path": request.path_qs[:512], "cameras": ",".join(refused)[:1000]},
        )
        raise Problem(403, "Forbidden", f"no {action} grant on {', '.join(refused)}", action=action, cameras=refused)
    return identity, audit


def _check_integrity(exc: asyncpg.PostgresError) -> Problem:
    message = str(exc)
    if isinstance(exc, asyncpg.exceptions.CheckViolationError):
        return Problem(422, "Unprocessable Content", message)
    return Problem(409, "Conflict", message)


async def _settings(conn: Any) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow("SELECT min_days, max_days FROM retention_settings")
    assert row is not None
    return row


async def _in_bounds(conn: Any, days: int) -> None:
    bounds = await _settings(conn)
    if not bounds["min_days"] <= days <= bounds["max_days"]:
        raise Problem(
            422,
            "Unprocessable Content",
            f"days: must be from {bounds['min_days']} to {bounds['max_days']} (the retention settings)",
            parameter="days",
            min_days=bounds["min_days"],
            max_days=bounds["max_days"],
        )


async def _known_cameras(conn: Any, cameras: Sequence[str]) -> None:
    rows = await conn.fetch(
        "SELECT c FROM unnest($1::text[]) AS c WHERE NOT EXISTS (SELECT 1 FROM cameras WHERE id = c) "
        "AND NOT EXISTS (SELECT 1 FROM segments WHERE camera = c)",
        list(cameras),
    )
    unknown = [r["c"] for r in rows]
    if unknown:
        raise Problem(
            422, "Unprocessable Content", f"unknown cameras: {', '.join(unknown)}", parameter="cameras", unknown=unknown
        )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: msgspec.json.encode(o).decode())


# --- settings and policies ---------------------------------------------------------------------------------------


async def get_settings(request: web.Request) -> web.Response:
    identity = identity_of(request)
    if not identity.cameras_for("configure"):
        raise Problem(403, "Forbidden", "reading retention settings needs a configure grant", action="configure")
    row = await _pool(request).fetchrow(
        "SELECT s.min_days, s.max_days, s.updated_by, s.updated_at, p.days AS default_days "
        "FROM retention_settings s, retention_policies p WHERE p.scope = 'default'"
    )
    assert row is not None
    return _json(
        {
            "min_days": row["min_days"],
            "max_days": row["max_days"],
            "default_days": row["default_days"],
            "updated_by": row["updated_by"],
            "updated_at": _iso(row["updated_at"]),
        }
    )


async def put_settings(request: web.Request) -> web.Response:
    body: SettingsBody = await _body(request, SettingsBody)
    identity, audit = await _require_all(request, "configure", ["*"], "retention.settings.set")
    if body.min_days > body.max_days:
        raise Problem(422, "Unprocessable Content", "min_days must not be above max_days", parameter="min_days")
    async with _pool(request).acquire() as conn, conn.transaction():
        before = await _settings(conn)
        try:
            await conn.execute(
                "UPDATE retention_settings SET min_days = $1, max_days = $2, updated_by = $3, updated_at = $4",
                body.min_days,
                body.max_days,
                identity.subject,
                _now(request),
            )
        except asyncpg.exceptions.CheckViolationError as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        await audit.emit(
            "retention.settings.set",
            target="retention:settings",
            reason=body.reason,
            details={
                "min_days": str(body.min_days),
                "max_days": str(body.max_days),
                "previous_min_days": str(before["min_days"]),
                "previous_max_days": str(before["max_days"]),
            },
        )
    return _json({"min_days": body.min_days, "max_days": body.max_days})


def _policy_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "scope": row["scope"],
        "subject": row["subject"],
        "days": row["days"],
        "reason": row["reason"],
        "updated_by": row["updated_by"],
        "updated_at": _iso(row["updated_at"]),
    }


async def list_policies(request: web.Request) -> web.Response:
    identity = identity_of(request)
    if not identity.cameras_for("configure"):
        raise Problem(403, "Forbidden", "reading retention policies needs a configure grant", action="configure")
    pool = _pool(request)
    policies = await pool.fetch("SELECT * FROM retention_policies ORDER BY scope, subject")
    groups = await pool.fetch(
        "SELECT g.id, g.name, g.description, g.updated_by, g.updated_at, p.days, "
        "coalesce(array_agg(m.camera ORDER BY m.camera) FILTER (WHERE m.camera IS NOT NULL), '{}') AS cameras "
        "FROM retention_groups g LEFT JOIN retention_group_members m ON m.group_id = g.id "
        "LEFT JOIN retention_policies p ON p.scope = 'group' AND p.subject = g.id "
        "GROUP BY g.id, p.days ORDER BY g.id"
    )
    bounds = await _settings(pool)
    return _json(
        {
            "min_days": bounds["min_days"],
            "max_days": bounds["max_days"],
            "policies": [_policy_json(r) for r in policies],
            "groups": [
                {
                    "id": g["id"],
                    "name": g["name"],
                    "description": g["description"],
                    "days": g["days"],
                    "cameras": list(g["cameras"]),
                    "updated_by": g["updated_by"],
                    "updated_at": _iso(g["updated_at"]),
                }
                for g in groups
            ],
        }
    )


async def _set_policy(
    request: web.Request, scope: str, subject: str, body: PolicyBody, identity: Identity, audit: _Audit
) -> web.Response:
    async with _pool(request).acquire() as conn, conn.transaction():
        await _in_bounds(conn, body.days)
        before = await conn.fetchval(
            "SELECT days FROM retention_policies WHERE scope = $1 AND subject = $2", scope, subject
        )
        try:
            row = await conn.fetchrow(
                "INSERT INTO retention_policies (scope, subject, days, reason, updated_by, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, subject) DO UPDATE SET days = EXCLUDED.days, "
                "reason = EXCLUDED.reason, updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at "
                "RETURNING *",
                scope,
                subject,
                body.days,
                body.reason,
                identity.subject,
                _now(request),
            )
        except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
            raise _check_integrity(exc) from exc
        assert row is not None
        await audit.emit(
            "retention.policy.set",
            camera=subject if scope == "camera" else "",
            target=f"{scope}:{subject}",
            reason=body.reason,
            details={
                "scope": scope,
                "subject": subject,
                "days": str(body.days),
                "previous_days": "" if before is None else str(before),
            },
        )
    return _json(_policy_json(row))


async def _clear_policy(request: web.Request, scope: str, subject: str, reason: str, audit: _Audit) -> web.Response:
    async with _pool(request).acquire() as conn, conn.transaction():
        before = await conn.fetchval(
            "DELETE FROM retention_policies WHERE scope = $1 AND subject = $2 RETURNING days", scope, subject
        )
        if before is None:
            raise Problem(404, "Not Found", f"no {scope} policy for {subject}", scope=scope, subject=subject)
        await audit.emit(
            "retention.policy.clear",
            camera=subject if scope == "camera" else "",
            target=f"{scope}:{subject}",
            reason=reason,
            details={"scope": scope, "subject": subject, "previous_days": str(before)},
        )
    return web.Response(status=204)


async def put_default_policy(request: web.Request) -> web.Response:
    body: PolicyBody = await _body(request, PolicyBody)
    identity, audit = await _require_all(request, "configure", ["*"], "retention.policy.set")
    return await _set_policy(request, "default", "*", body, identity, audit)


async def put_camera_policy(request: web.Request) -> web.Response:
    camera = _name(request, "camera", "camera")
    body: PolicyBody = await _body(request, PolicyBody)
    identity, audit = await _require_all(request, "configure", [camera], "retention.policy.set")
    return await _set_policy(request, "camera", camera, body, identity, audit)


async def delete_camera_policy(request: web.Request) -> web.Response:
    camera = _name(request, "camera", "camera")
    reason = _query_reason(request)
    _, audit = await _require_all(request, "configure", [camera], "retention.policy.clear")
    return await _clear_policy(request, "camera", camera, reason, audit)


async def _site_cameras(request: web.Request, site: str) -> list[str]:
    """What a caller needs `configure` on to set a site's policy: `site:<id>` itself, or else every camera of it."""
    identity = identity_of(request)
    if identity.allows("configure", f"site:{site}"):
        return [f"site:{site}"]
    rows = await _pool(request).fetch("SELECT id FROM cameras WHERE site_id = $1 ORDER BY id", site)
    return [r["id"] for r in rows] or [f"site:{site}"]


async def put_site_policy(request: web.Request) -> web.Response:
    site = _name(request, "site", "site")
    body: PolicyBody = await _body(request, PolicyBody)
    if not await _pool(request).fetchval("SELECT EXISTS (SELECT 1 FROM sites WHERE id = $1)", site):
        raise Problem(404, "Not Found", f"unknown site {site}", site=site)
    identity, audit = await _require_all(
        request, "configure", await _site_cameras(request, site), "retention.policy.set"
    )
    return await _set_policy(request, "site", site, body, identity, audit)


async def delete_site_policy(request: web.Request) -> web.Response:
    site = _name(request, "site", "site")
    reason = _query_reason(request)
    _, audit = await _require_all(request, "configure", await _site_cameras(request, site), "retention.policy.clear")
    return await _clear_policy(request, "site", site, reason, audit)


async def put_group(request: web.Request) -> web.Response:
    group = _name(request, "group", "group")
    body: GroupBody = await _body(request, GroupBody)
    pool = _pool(request)
    old = [
        r["camera"] for r in await pool.fetch("SELECT camera FROM retention_group_members WHERE group_id = $1", group)
    ]
    identity, audit = await _require_all(request, "configure", set(old) | set(body.cameras), "retention.group.set")
    cameras = sorted(set(body.cameras))
    now = _now(request)
    async with pool.acquire() as conn, conn.transaction():
        if body.days is not None:
            await _in_bounds(conn, body.days)
        elsewhere = await conn.fetch(
            "SELECT camera, group_id FROM retention_group_members WHERE camera = ANY($1::text[]) AND group_id <> $2",
            cameras,
            group,
        )
        if elsewhere:
            raise Problem(
                409,
                "Conflict",
                "a camera belongs to one retention group at most: remove these from their groups first",
                cameras={r["camera"]: r["group_id"] for r in elsewhere},
            )
        await conn.execute(
            "INSERT INTO retention_groups (id, name, description, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, "
            "updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
            group,
            body.name,
            body.description,
            identity.subject,
            now,
        )
        await conn.execute(
            "DELETE FROM retention_group_members WHERE group_id = $1 AND NOT (camera = ANY($2::text[]))",
            group,
            cameras,
        )
        await conn.execute(
            "INSERT INTO retention_group_members (camera, group_id) SELECT c, $2 FROM unnest($1::text[]) AS c "
            "ON CONFLICT (camera) DO NOTHING",
            cameras,
            group,
        )
        before = await conn.fetchval(
            "SELECT days FROM retention_policies WHERE scope = 'group' AND subject = $1", group
        )
        if body.days is None:
            await conn.execute("DELETE FROM retention_policies WHERE scope = 'group' AND subject = $1", group)
        else:
            await conn.execute(
                "INSERT INTO retention_policies (scope, subject, days, reason, updated_by, updated_at) "
                "VALUES ('group', $1, $2, $3, $4, $5) ON CONFLICT (scope, subject) DO UPDATE SET days = EXCLUDED.days, "
                "reason = EXCLUDED.reason, updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                group,
                body.days,
                body.reason,
                identity.subject,
                now,
            )
        await audit.emit(
            "retention.group.set",
            target=f"group:{group}",
            reason=body.reason,
            details={
                "group": group,
                "name": body.name,
                "cameras": ",".join(cameras)[:4000],
                "previous_cameras": ",".join(sorted(old))[:4000],
                "days": "" if body.days is None else str(body.days),
                "previous_days": "" if before is None else str(before),
            },
        )
    return _json(
        {"id": group, "name": body.name, "description": body.description, "cameras": cameras, "days": body.days}
    )


async def delete_group(request: web.Request) -> web.Response:
    group = _name(request, "group", "group")
    reason = _query_reason(request)
    pool = _pool(request)
    members = [
        r["camera"] for r in await pool.fetch("SELECT camera FROM retention_group_members WHERE group_id = $1", group)
    ]
    _, audit = await _require_all(request, "configure", members or ["*"], "retention.group.delete")
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval(
            "DELETE FROM retention_policies WHERE scope = 'group' AND subject = $1 RETURNING days", group
        )
        if await conn.fetchval("DELETE FROM retention_groups WHERE id = $1 RETURNING id", group) is None:
            raise Problem(404, "Not Found", f"no retention group {group}", group=group)
        await audit.emit(
            "retention.group.delete",
            target=f"group:{group}",
            reason=reason,
            details={
                "group": group,
                "previous_cameras": ",".join(sorted(members))[:4000],
                "previous_days": "" if before is None else str(before),
            },
        )
    return web.Response(status=204)


async def camera_policy(request: web.Request) -> web.Response:
    camera = _name(request, "camera", "camera")
    identity = identity_of(request)
    if not identity.allows("configure", camera):
        raise Problem(403, "Forbidden", f"no configure grant on camera {camera}", action="configure", camera=camera)
    now = _now(request)
    row = await _pool(request).fetchrow("SELECT * FROM argus_retention_policy($1)", camera)
    assert row is not None
    return _json(
        {
            "camera": camera,
            "days": row["days"],
            "scope": row["scope"],
            "subject": row["subject"],
            "cutoff": _iso(now - dt.timedelta(days=row["days"])),
        }
    )


# --- holds -------------------------------------------------------------------------------------------------------

_HOLDS = """
SELECT h.*, array_agg(hc.camera ORDER BY hc.camera) AS cameras
FROM evidence_holds h JOIN evidence_hold_cameras hc ON hc.hold_id = h.id
WHERE ($1::uuid IS NULL OR h.id = $1)
  AND ($2::boolean IS NULL OR (h.released_at IS NULL) = $2)
  AND ($3::timestamptz IS NULL OR (h.released_at IS NULL AND h.review_at <= $3))
  AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM evidence_hold_cameras c WHERE c.hold_id = h.id AND c.camera = $4))
GROUP BY h.id
ORDER BY h.created_at, h.id
"""

_PROTECTS = """
SELECT h.id, hc.camera, count(s.object_key) AS segments, coalesce(sum(s.bytes), 0)::bigint AS bytes
FROM evidence_holds h JOIN evidence_hold_cameras hc ON hc.hold_id = h.id
LEFT JOIN segments s ON s.camera = hc.camera AND s.start_time >= h.start_time - interval '10 minutes'
                    AND s.start_time < h.end_time AND s.end_time > h.start_time
WHERE h.id = ANY($1::uuid[]) AND h.released_at IS NULL
GROUP BY h.id, hc.camera
"""


async def _hold_json(pool: asyncpg.Pool, rows: Sequence[asyncpg.Record], now: dt.datetime) -> list[dict[str, Any]]:
    protects: dict[uuid.UUID, dict[str, dict[str, int]]] = {}
    for r in await pool.fetch(_PROTECTS, [row["id"] for row in rows]):
        protects.setdefault(r["id"], {})[r["camera"]] = {"segments": r["segments"], "bytes": r["bytes"]}
    out = []
    for row in rows:
        active = row["released_at"] is None
        per_camera = protects.get(row["id"], {})
        out.append(
            {
                "id": str(row["id"]),
                "cameras": list(row["cameras"]),
                "from": _iso(row["start_time"]),
                "until": _iso(row["end_time"]),
                "reason": row["reason"],
                "case_reference": row["case_reference"],
                "owner": row["owner"],
                "review_at": _iso(row["review_at"]),
                "review_overdue": active and row["review_at"] <= now,
                "active": active,
                "created_by": row["created_by"],
                "created_at": _iso(row["created_at"]),
                "updated_by": row["updated_by"] or None,
                "updated_at": _iso(row["updated_at"]),
                "released_by": row["released_by"] or None,
                "released_at": _iso(row["released_at"]),
                "release_reason": row["release_reason"] or None,
                "protects": {
                    "segments": sum(c["segments"] for c in per_camera.values()),
                    "bytes": sum(c["bytes"] for c in per_camera.values()),
                    "cameras": per_camera,
                }
                if active
                else None,
            }
        )
    return out


async def _hold_or_404(request: web.Request) -> asyncpg.Record:
    text = request.match_info["hold"]
    try:
        hold_id = uuid.UUID(text)
    except ValueError:
        raise Problem(404, "Not Found", f"{text!r} is not a hold id", hold=text) from None
    row = await _pool(request).fetchrow(_HOLDS, hold_id, None, None, None)
    if row is None:
        raise Problem(404, "Not Found", f"no evidence hold {text}", hold=text)
    return row


async def create_hold(request: web.Request) -> web.Response:
    body: HoldBody = await _body(request, HoldBody)
    if body.end <= body.start:
        raise Problem(422, "Unprocessable Content", "until must be after from", parameter="until")
    now = _now(request)
    if body.review_at <= now:
        raise Problem(422, "Unprocessable Content", "review_at must be in the future", parameter="review_at")
    cameras = sorted(set(body.cameras))
    identity, audit = await _require_all(
        request, "hold", cameras, "retention.hold.create", footage=(body.start, body.end)
    )
    pool = _pool(request)
    # Outside the transaction: it holds locks on the hold tables only, never on `segments` (a sweep detaching a
    # day takes the hold tables first, then `segments`).
    await _known_cameras(pool, cameras)
    async with pool.acquire() as conn, conn.transaction():
        hold_id = await conn.fetchval(
            "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, created_by, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            body.start,
            body.end,
            body.reason,
            body.case_reference,
            body.owner,
            body.review_at,
            identity.subject,
            now,
        )
        await conn.execute(
            "INSERT INTO evidence_hold_cameras (hold_id, camera) SELECT $1, c FROM unnest($2::text[]) AS c",
            hold_id,
            cameras,
        )
        for camera in cameras:
            await audit.emit(
                "retention.hold.create",
                camera=camera,
                target=f"hold:{hold_id}",
                footage=(body.start, body.end),
                reason=body.reason,
                reference=body.case_reference,
                details={
                    "hold": str(hold_id),
                    "cameras": ",".join(cameras)[:4000],
                    "owner": body.owner,
                    "review_at": _iso(body.review_at) or "",
                },
            )
    row = await pool.fetchrow(_HOLDS, hold_id, None, None, None)
    assert row is not None
    return _json((await _hold_json(pool, [row], now))[0], status=201)


async def list_holds(request: web.Request) -> web.Response:
    identity = identity_of(request)
    camera = request.query.get("camera") or None
    now = _now(request)
    overdue = _bool(request, "overdue")
    rows = await _pool(request).fetch(_HOLDS, None, _bool(request, "active"), now if overdue else None, camera)
    visible = [r for r in rows if any(identity.allows("hold", c) for c in r["cameras"])]
    return _json({"holds": await _hold_json(_pool(request), visible, now)})


async def get_hold(request: web.Request) -> web.Response:
    row = await _hold_or_404(request)
    identity = identity_of(request)
    if not any(identity.allows("hold", c) for c in row["cameras"]):
        raise Problem(403, "Forbidden", "no hold grant on the cameras of this hold", action="hold")
    return _json((await _hold_json(_pool(request), [row], _now(request)))[0])


async def update_hold(request: web.Request) -> web.Response:
    row = await _hold_or_404(request)
    body: HoldPatch = await _body(request, HoldPatch)
    start = body.start or row["start_time"]
    end = body.end or row["end_time"]
    identity, audit = await _require_all(
        request,
        "hold",
        row["cameras"],
        "retention.hold.update",
        footage=(min(start, row["start_time"]), max(end, row["end_time"])),
    )
    if row["released_at"] is not None:
        raise Problem(409, "Conflict", "this hold was released; make a new one", hold=str(row["id"]))
    if end <= start:
        raise Problem(422, "Unprocessable Content", "until must be after from", parameter="until")
    now = _now(request)
    if body.review_at is not None and body.review_at <= now:
        raise Problem(422, "Unprocessable Content", "review_at must be in the future", parameter="review_at")
    changes: dict[str, str] = {}
    fields = {
        "start_time": (start, row["start_time"]),
        "end_time": (end, row["end_time"]),
        "review_at": (body.review_at or row["review_at"], row["review_at"]),
        "reason": (body.reason or row["reason"], row["reason"]),
        "case_reference": (body.case_reference or row["case_reference"], row["case_reference"]),
        "owner": (body.owner or row["owner"], row["owner"]),
    }
    for name, (new, old) in fields.items():
        if new != old:
            changes[name] = f"{_iso(old) if isinstance(old, dt.datetime) else old} -> " + (
                _iso(new) or "" if isinstance(new, dt.datetime) else str(new)
            )
    pool = _pool(request)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE evidence_holds SET start_time = $2, end_time = $3, review_at = $4, reason = $5, "
            "case_reference = $6, owner = $7, updated_by = $8, updated_at = $9 WHERE id = $1",
            row["id"],
            *(new for new, _ in fields.values()),
            identity.subject,
            now,
        )
        for camera in row["cameras"]:
            await audit.emit(
                "retention.hold.update",
                camera=camera,
                target=f"hold:{row['id']}",
                footage=(start, end),
                reason=body.change_reason,
                reference=str(fields["case_reference"][0]),
                details={"hold": str(row["id"]), **{k: v[:500] for k, v in changes.items()}},
            )
    updated = await pool.fetchrow(_HOLDS, row["id"], None, None, None)
    assert updated is not None
    return _json((await _hold_json(pool, [updated], now))[0])


async def release_hold(request: web.Request) -> web.Response:
    row = await _hold_or_404(request)
    body: ReleaseBody = await _body(request, ReleaseBody)
    identity, audit = await _require_all(
        request, "hold", row["cameras"], "retention.hold.release", footage=(row["start_time"], row["end_time"])
    )
    if row["released_at"] is not None:
        raise Problem(409, "Conflict", "this hold was already released", hold=str(row["id"]))
    now = _now(request)
    pool = _pool(request)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE evidence_holds SET released_at = $2, released_by = $3, release_reason = $4 WHERE id = $1",
            row["id"],
            now,
            identity.subject,
            body.reason,
        )
        for camera in row["cameras"]:
            await audit.emit(
                "retention.hold.release",
                camera=camera,
                target=f"hold:{row['id']}",
                footage=(row["start_time"], row["end_time"]),
                reason=body.reason,
                reference=row["case_reference"],
                details={"hold": str(row["id"]), "owner": row["owner"]},
            )
    released = await pool.fetchrow(_HOLDS, row["id"], None, None, None)
    assert released is not None
    return _json((await _hold_json(pool, [released], now))[0])


# --- dry run and storage use -------------------------------------------------------------------------------------


async def dry_run(request: web.Request) -> web.Response:
    identity = identity_of(request)
    at = _at(request)
    only = request.query.get("camera") or None
    rows = await _pool(request).fetch("SELECT * FROM argus_retention_dry_run($1)", at)
    cameras = [
        {
            "camera": r["camera"],
            "days": r["days"],
            "policy": {"scope": r["scope"], "subject": r["subject"]},
            "cutoff": _iso(r["cutoff"]),
            "segments": r["segments"],
            "bytes": r["bytes"],
            "from": _iso(r["first_start"]),
            "until": _iso(r["last_end"]),
            "held_segments": r["held_segments"],
            "held_bytes": r["held_bytes"],
        }
        for r in rows
        if identity.allows("configure", r["camera"]) and (only is None or r["camera"] == only)
    ]
    return _json(
        {
            "at": _iso(at),
            "cameras": cameras,
            "segments": sum(c["segments"] for c in cameras),
            "bytes": sum(c["bytes"] for c in cameras),
            "held_segments": sum(c["held_segments"] for c in cameras),
            "held_bytes": sum(c["held_bytes"] for c in cameras),
        }
    )


async def storage(request: web.Request) -> web.Response:
    identity = identity_of(request)
    rows = await _pool(request).fetch(
        "SELECT u.*, c.site_id FROM argus_storage_usage() u LEFT JOIN cameras c ON c.id = u.camera"
    )
    cameras: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not identity.allows("configure", r["camera"]):
            continue
        cam = cameras.setdefault(
            r["camera"],
            {
                "camera": r["camera"],
                "site": r["site_id"],
                "segments": 0,
                "bytes": 0,
                "from": None,
                "until": None,
                "streams": {},
            },
        )
        cam["streams"][r["stream"]] = {
            "segments": r["segments"],
            "bytes": r["bytes"],
            "from": _iso(r["first_start"]),
            "until": _iso(r["last_end"]),
        }
        cam["segments"] += r["segments"]
        cam["bytes"] += r["bytes"]
        first, last = _iso(r["first_start"]), _iso(r["last_end"])
        cam["from"] = min(x for x in (cam["from"], first) if x is not None)
        cam["until"] = max(x for x in (cam["until"], last) if x is not None)
    sites: dict[str, dict[str, Any]] = {}
    for cam in cameras.values():
        site = sites.setdefault(cam["site"] or "", {"site": cam["site"], "cameras": 0, "segments": 0, "bytes": 0})
        site["cameras"] += 1
        site["segments"] += cam["segments"]
        site["bytes"] += cam["bytes"]
    return _json(
        {
            "cameras": sorted(cameras.values(), key=lambda c: c["camera"]),
            "sites": sorted(sites.values(), key=lambda s: s["site"] or ""),
            "segments": sum(c["segments"] for c in cameras.values()),
            "bytes": sum(c["bytes"] for c in cameras.values()),
        }
    )


def routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/retention/settings", get_settings)
    r.add_put("/api/v1/retention/settings", put_settings)
    r.add_get("/api/v1/retention/policies", list_policies)
    r.add_put("/api/v1/retention/policies/default", put_default_policy)
    r.add_put("/api/v1/retention/policies/cameras/{camera}", put_camera_policy)
    r.add_delete("/api/v1/retention/policies/cameras/{camera}", delete_camera_policy)
    r.add_put("/api/v1/retention/policies/sites/{site}", put_site_policy)
    r.add_delete("/api/v1/retention/policies/sites/{site}", delete_site_policy)
    r.add_put("/api/v1/retention/groups/{group}", put_group)
    r.add_delete("/api/v1/retention/groups/{group}", delete_group)
    r.add_get("/api/v1/retention/cameras/{camera}", camera_policy)
    r.add_post("/api/v1/retention/holds", create_hold)
    r.add_get("/api/v1/retention/holds", list_holds)
    r.add_get("/api/v1/retention/holds/{hold}", get_hold)
    r.add_patch("/api/v1/retention/holds/{hold}", update_hold)
    r.add_post("/api/v1/retention/holds/{hold}/release", release_hold)
    r.add_get("/api/v1/retention/dry-run", dry_run)
    r.add_get("/api/v1/retention/storage", storage)
