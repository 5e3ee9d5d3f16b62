"""The api's retention routes: grants checked (configure for policies, hold for holds), every change audited,
problem+json for bad input, holds listed with what they protect, the dry run and storage use."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from argus_api import audit, cameras, retention
from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus, decode
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import EVENTS_STREAM
from argus_core.http import PROBLEM_JSON, VERIFIER_KEY, auth_middleware, problem_middleware
from argus_core.identity import Grant, TokenConfig, TokenIssuer, TokenVerifier, generate_keypair
from argus_core.storage import ObjectStore
from argus_retention.metrics import RetentionMetrics
from argus_retention.notices import HoldReviews
from argus_retention.objects import RecordingObjects
from argus_retention.sweep import Sweeper
from argus_retention.usage import UsageCache
from tests.retention.support import T0, Clock, audit_events, object_keys, plan, record

DAY = timedelta(days=1)


@pytest.fixture
def issuer(tmp_path: Path) -> TokenIssuer:
    private, public = generate_keypair()
    (tmp_path / "r1.key").write_bytes(private)
    (tmp_path / "r1.pem").write_bytes(public)
    return TokenIssuer.from_file(str(tmp_path / "r1.key"), issuer="argus", audience="argus", ttl_s=600)


@pytest.fixture
async def server(
    pool: asyncpg.Pool, tmp_path: Path, bus: Bus, clock: Clock, issuer: TokenIssuer
) -> AsyncIterator[TestServer]:
    await pool.execute("INSERT INTO sites (id, name) VALUES ('north', 'North'), ('south', 'South')")
    await pool.execute(
        "INSERT INTO cameras (id, name, site_id, main_url) VALUES ('cam-1', 'a', 'north', 'rtsp://a'), "
        "('cam-2', 'b', 'north', 'rtsp://b'), ('cam-3', 'c', 'south', 'rtsp://c')"
    )
    app = web.Application(middlewares=[problem_middleware, auth_middleware])
    app[VERIFIER_KEY] = TokenVerifier.from_config(TokenConfig(public_keys=(str(tmp_path / "r1.pem"),)))
    app[cameras.POOL_KEY] = pool
    audit.setup(app, emitter=AuditEmitter(bus, "api"))
    now: Callable[[], int] = clock
    app[retention.CLOCK_KEY] = now
    retention.routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def tokens(issuer: TokenIssuer) -> dict[str, str]:
    night = (int((T0 - DAY).timestamp()), int((T0 + 2 * DAY).timestamp()))
    return {
        "admin": issuer.issue("admin-1", ["admin"], [Grant(actions=("configure", "hold"), cameras=("*",))]),
        "manager": issuer.issue("mgr-1", ["supervisor"], [Grant(actions=("configure",), cameras=("cam-1",))]),
        "officer": issuer.issue(
            "pc-12",
            ["partner"],
            [
                Grant(
                    actions=("hold", "playback"),
                    cameras=("cam-1", "cam-2"),
                    footage_from=night[0],
                    footage_until=night[1],
                )
            ],
            org="police",
        ),
        "operator": issuer.issue("op-1", ["operator"], [Grant(actions=("live", "playback"), cameras=("*",))]),
    }


async def call(
    server: TestServer, method: str, path: str, token: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}"}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with (
        ClientSession() as http,
        http.request(method, server.make_url(path), headers=headers, data=data) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text else None, response.content_type


def iso(when: Any) -> str:
    return str(when.isoformat().replace("+00:00", "Z"))


async def test_policy_changes_need_configure_and_are_audited(
    server: TestServer, tokens: dict[str, str], bus: Bus, pool: asyncpg.Pool
) -> None:
    body = {"days": 14, "reason": "busy junction, footage needed for two weeks"}
    status, problem, kind = await call(
        server, "PUT", "/api/v1/retention/policies/cameras/cam-1", tokens["operator"], body
    )
    assert (status, kind) == (403, PROBLEM_JSON)
    assert problem["cameras"] == ["cam-1"]
    status, policy, _ = await call(server, "PUT", "/api/v1/retention/policies/cameras/cam-1", tokens["manager"], body)
    assert status == 200
    assert (policy["scope"], policy["subject"], policy["days"], policy["updated_by"]) == (
        "camera",
        "cam-1",
        14,
        "mgr-1",
    )
    assert (await call(server, "PUT", "/api/v1/retention/policies/cameras/cam-2", tokens["manager"], body))[0] == 403
    assert (await call(server, "PUT", "/api/v1/retention/policies/default", tokens["manager"], body))[0] == 403
    status, _, _ = await call(
        server, "PUT", "/api/v1/retention/policies/default", tokens["admin"], {**body, "days": 45}
    )
    assert status == 200
    status, effective, _ = await call(server, "GET", "/api/v1/retention/cameras/cam-1", tokens["manager"])
    assert (effective["days"], effective["scope"], effective["cutoff"]) == (14, "camera", "2025-12-18T00:00:00Z")
    status, _, kind = await call(server, "DELETE", "/api/v1/retention/policies/cameras/cam-1", tokens["manager"])
    assert (status, kind) == (400, PROBLEM_JSON)  # no reason
    status, _, _ = await call(
        server, "DELETE", "/api/v1/retention/policies/cameras/cam-1?reason=back%20to%20default", tokens["manager"]
    )
    assert status == 204
    status, effective, _ = await call(server, "GET", "/api/v1/retention/cameras/cam-1", tokens["manager"])
    assert (effective["days"], effective["scope"]) == (45, "default")

    events = [e for e in await audit_events(bus) if e.action.startswith("retention.")]
    assert [(e.action, e.outcome, e.actor.subject, e.camera) for e in events] == [
        ("retention.policy.set", "denied", "op-1", "cam-1"),
        ("retention.policy.set", "success", "mgr-1", "cam-1"),
        ("retention.policy.set", "denied", "mgr-1", "cam-2"),
        ("retention.policy.set", "denied", "mgr-1", ""),
        ("retention.policy.set", "success", "admin-1", ""),
        ("retention.policy.clear", "success", "mgr-1", "cam-1"),
    ]
    assert events[1].details == {"scope": "camera", "subject": "cam-1", "days": "14", "previous_days": ""}
    assert events[1].reason == body["reason"]
    assert events[4].target == "default:*"
    assert events[4].details["previous_days"] == "31"
    assert events[5].reason == "back to default"


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b'{"days": 3, "reason": "short"}', 422, "must be from 7 to 90"),
        (b'{"days": 400, "reason": "long"}', 422, "must be from 7 to 90"),
        (b'{"days": "ten", "reason": "x"}', 422, "Expected `int`"),
        (b'{"days": 10}', 422, "reason"),
        (b'{"days": 10, "reason": "x", "extra": 1}', 422, "extra"),
        (b'{"days": 10, "reason": ""}', 422, "reason"),
        (b"not json", 400, "JSON"),
    ],
)
async def test_bad_policy_input_is_problem_json(
    server: TestServer, tokens: dict[str, str], raw: bytes, status: int, fragment: str
) -> None:
    got, problem, kind = await call(server, "PUT", "/api/v1/retention/policies/cameras/cam-1", tokens["admin"], raw=raw)
    assert (got, kind) == (status, PROBLEM_JSON)
    assert fragment in problem["detail"]


async def test_groups_sites_and_settings(server: TestServer, tokens: dict[str, str], bus: Bus) -> None:
    group = {"name": "Parks", "cameras": ["cam-1", "cam-2"], "days": 20, "reason": "parks review 2026"}
    assert (await call(server, "PUT", "/api/v1/retention/groups/parks", tokens["manager"], group))[0] == 403
    status, made, _ = await call(server, "PUT", "/api/v1/retention/groups/parks", tokens["admin"], group)
    assert (status, made["cameras"], made["days"]) == (200, ["cam-1", "cam-2"], 20)
    status, problem, _ = await call(
        server, "PUT", "/api/v1/retention/groups/other", tokens["admin"], {**group, "cameras": ["cam-2", "cam-3"]}
    )
    assert (status, problem["cameras"]) == (409, {"cam-2": "parks"})
    status, listing, _ = await call(server, "GET", "/api/v1/retention/policies", tokens["manager"])
    assert listing["groups"][0]["cameras"] == ["cam-1", "cam-2"]
    assert {(p["scope"], p["days"]) for p in listing["policies"]} == {("default", 31), ("group", 20)}
    assert (await call(server, "GET", "/api/v1/retention/policies", tokens["operator"]))[0] == 403
    # A site policy needs configure on the whole site (here: each of its cameras).
    site = {"days": 60, "reason": "south depot: insurance claims"}
    assert (await call(server, "PUT", "/api/v1/retention/policies/sites/north", tokens["manager"], site))[0] == 403
    assert (await call(server, "PUT", "/api/v1/retention/policies/sites/south", tokens["admin"], site))[0] == 200
    assert (await call(server, "PUT", "/api/v1/retention/policies/sites/nowhere", tokens["admin"], site))[0] == 404
    status, effective, _ = await call(server, "GET", "/api/v1/retention/cameras/cam-3", tokens["admin"])
    assert (effective["days"], effective["scope"], effective["subject"]) == (60, "site", "south")
    # Settings: bounds every policy keeps within.
    status, problem, _ = await call(
        server, "PUT", "/api/v1/retention/settings", tokens["admin"], {"min_days": 7, "max_days": 45, "reason": "x"}
    )
    assert status == 409
    assert "site south (60 days)" in problem["detail"]
    bad = {"min_days": 30, "max_days": 10, "reason": "x"}
    assert (await call(server, "PUT", "/api/v1/retention/settings", tokens["admin"], bad))[0] == 422
    ok = {"min_days": 14, "max_days": 62, "reason": "council policy 2026/04"}
    assert (await call(server, "PUT", "/api/v1/retention/settings", tokens["manager"], ok))[0] == 403
    assert (await call(server, "PUT", "/api/v1/retention/settings", tokens["admin"], ok))[0] == 200
    status, settings, _ = await call(server, "GET", "/api/v1/retention/settings", tokens["manager"])
    assert (settings["min_days"], settings["max_days"], settings["default_days"]) == (14, 62, 31)
    status, _, _ = await call(server, "DELETE", "/api/v1/retention/groups/parks?reason=merged", tokens["admin"])
    assert status == 204
    actions = [e.action for e in await audit_events(bus) if e.outcome == "success"]
    assert actions == [
        "retention.group.set",
        "retention.policy.set",
        "retention.settings.set",
        "retention.group.delete",
    ]


async def test_holds_are_made_listed_with_what_they_protect_and_released(
    server: TestServer,
    tokens: dict[str, str],
    bus: Bus,
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    objects: RecordingObjects,
    clock: Clock,
) -> None:
    segs = plan("cam-1", T0, 20) + plan("cam-2", T0, 20, variant=2)
    await record(pool, store, bucket, segs)
    size = await pool.fetchval("SELECT bytes FROM segments LIMIT 1")
    hold = {
        "cameras": ["cam-1"],
        "from": iso(segs[4].start + timedelta(seconds=2)),
        "until": iso(segs[7].start + timedelta(seconds=1)),
        "reason": "assault reported outside the station",
        "case_reference": "CR/2026/0042",
        "owner": "DC Smith",
        "review_at": iso(T0 + 60 * DAY),
    }
    assert (await call(server, "POST", "/api/v1/retention/holds", tokens["manager"], hold))[0] == 403
    status, made, _ = await call(server, "POST", "/api/v1/retention/holds", tokens["officer"], hold)
    assert status == 201
    assert made["protects"] == {
        "segments": 4,
        "bytes": 4 * size,
        "cameras": {"cam-1": {"segments": 4, "bytes": 4 * size}},
    }
    assert (made["active"], made["created_by"], made["review_overdue"]) == (True, "pc-12", False)

    # Outside the officer's footage window, unknown cameras, bad ranges: refused with problem+json.
    late = {**hold, "from": iso(T0 + 5 * DAY), "until": iso(T0 + 6 * DAY)}
    assert (await call(server, "POST", "/api/v1/retention/holds", tokens["officer"], late))[0] == 403
    for broken, status_code in [
        ({**hold, "until": hold["from"]}, 422),
        ({**hold, "review_at": iso(T0 - DAY)}, 422),
        ({**hold, "cameras": ["cam-9"]}, 422),
        ({k: v for k, v in hold.items() if k != "case_reference"}, 422),
        ({**hold, "from": "2026-01-01T00:00:00"}, 422),  # no zone
        ({**hold, "cameras": []}, 422),
    ]:
        got, problem, kind = await call(server, "POST", "/api/v1/retention/holds", tokens["admin"], broken)
        assert (got, kind) == (status_code, PROBLEM_JSON), (broken, problem)

    # Listed to those with hold on its cameras, with what it protects.
    status, listing, _ = await call(server, "GET", "/api/v1/retention/holds?active=true", tokens["officer"])
    assert [h["id"] for h in listing["holds"]] == [made["id"]]
    assert (await call(server, "GET", "/api/v1/retention/holds", tokens["operator"]))[1] == {"holds": []}
    assert (await call(server, "GET", f"/api/v1/retention/holds/{made['id']}", tokens["operator"]))[0] == 403
    assert (await call(server, "GET", "/api/v1/retention/holds/not-a-uuid", tokens["admin"]))[0] == 404

    # The sweep keeps what the hold covers, the segments straddling its edges whole.
    clock.set(T0 + 40 * DAY)
    await Sweeper(pool, objects, clock=clock).sweep()
    assert await object_keys(store, bucket) == {g.key for g in segs[4:8]} | {segs[0].init}

    patch = {"until": iso(segs[9].end), "review_at": iso(T0 + 90 * DAY), "change_reason": "CPS asked for more"}
    status, updated, _ = await call(server, "PATCH", f"/api/v1/retention/holds/{made['id']}", tokens["officer"], patch)
    assert (status, updated["until"], updated["protects"]["segments"]) == (200, iso(segs[9].end), 4)  # 8, 9 are gone
    status, released, _ = await call(
        server, "POST", f"/api/v1/retention/holds/{made['id']}/release", tokens["officer"], {"reason": "case closed"}
    )
    assert (status, released["active"], released["released_by"], released["protects"]) == (200, False, "pc-12", None)
    again = await call(
        server, "POST", f"/api/v1/retention/holds/{made['id']}/release", tokens["officer"], {"reason": "x"}
    )
    assert again[0] == 409

    events = [e for e in await audit_events(bus) if e.action.startswith("retention.hold")]
    assert [(e.action, e.outcome) for e in events] == [
        ("retention.hold.create", "denied"),
        ("retention.hold.create", "success"),
        ("retention.hold.create", "denied"),
        ("retention.hold.update", "success"),
        ("retention.hold.release", "success"),
    ]
    created = events[1]
    assert (created.camera, created.reference, created.actor.subject) == ("cam-1", "CR/2026/0042", "pc-12")
    assert created.footage_start_ns is not None
    assert created.details["owner"] == "DC Smith"
    assert events[3].details["end_time"].endswith(iso(segs[9].end))
    assert events[4].reason == "case closed"


async def test_overdue_reviews_raise_a_notice_and_are_listed(
    server: TestServer, tokens: dict[str, str], bus: Bus, pool: asyncpg.Pool, clock: Clock
) -> None:
    hold = {
        "cameras": ["cam-1", "cam-2"],
        "from": iso(T0),
        "until": iso(T0 + DAY),
        "reason": "vehicle crime series",
        "case_reference": "OP-HALCYON",
        "owner": "DS Jones",
        "review_at": iso(T0 + 7 * DAY),
    }
    status, made, _ = await call(server, "POST", "/api/v1/retention/holds", tokens["admin"], hold)
    assert status == 201
    metrics = RetentionMetrics(CollectorRegistry())
    reviews = HoldReviews(pool, bus, pod="r-0", clock=clock, metrics=metrics)
    assert (await reviews.check()).notified == 0
    assert (await call(server, "GET", "/api/v1/retention/holds?overdue=true", tokens["admin"]))[1] == {"holds": []}

    clock.set(T0 + 8 * DAY)
    check = await reviews.check()
    assert (check.notified, check.overdue, check.active) == (1, 1, 1)
    assert metrics.holds_review_overdue._value.get() == 1
    assert (await reviews.check()).notified == 0  # once per review date
    status, listing, _ = await call(server, "GET", "/api/v1/retention/holds?overdue=true", tokens["officer"])
    assert [(h["id"], h["review_overdue"]) for h in listing["holds"]] == [(made["id"], True)]

    info = await bus.js.stream_info(EVENTS_STREAM)
    notices = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        assert msg.subject is not None
        assert msg.data is not None
        if msg.subject == s.SERVICE_EVENT.format(service="retention", kind="hold_review_due"):
            notices.append(decode(s.SERVICE_EVENT, msg.data, msg.subject))
    assert len(notices) == 1
    assert notices[0].details["hold"] == made["id"]
    assert notices[0].details["cameras"] == "cam-1,cam-2"
    assert "OP-HALCYON" in notices[0].message

    # A new review date: no longer overdue; when it passes, a new notice.
    patch = {"review_at": iso(T0 + 30 * DAY), "change_reason": "reviewed with CPS"}
    assert (await call(server, "PATCH", f"/api/v1/retention/holds/{made['id']}", tokens["admin"], patch))[0] == 200
    assert (await reviews.check()).overdue == 0
    clock.set(T0 + 31 * DAY)
    assert (await reviews.check()).notified == 1


async def test_dry_run_and_storage_use(
    server: TestServer,
    tokens: dict[str, str],
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    clock: Clock,
) -> None:
    segs = plan("cam-1", T0, 10) + plan("cam-1", T0 + 5 * DAY, 5) + plan("cam-3", T0 + DAY, 4, variant=3)
    segs += plan("cam-1", T0 + 5 * DAY, 3, stream="sub")
    await record(pool, store, bucket, segs)
    size = await pool.fetchval("SELECT bytes FROM segments LIMIT 1")
    status, dry, _ = await call(server, "GET", "/api/v1/retention/dry-run?at=2026-02-04T00:00:00Z", tokens["admin"])
    assert status == 200
    assert [(c["camera"], c["segments"], c["bytes"]) for c in dry["cameras"]] == [
        ("cam-1", 10, 10 * size),
        ("cam-3", 4, 4 * size),
    ]
    assert (dry["segments"], dry["bytes"]) == (14, 14 * size)
    status, dry, _ = await call(server, "GET", "/api/v1/retention/dry-run?at=1770163200", tokens["manager"])
    assert [c["camera"] for c in dry["cameras"]] == ["cam-1"]  # only what the caller may configure
    assert (await call(server, "GET", "/api/v1/retention/dry-run?at=yesterday", tokens["admin"]))[0] == 400

    clock.set(T0 + 10 * DAY)

    async def use() -> Any:
        status, body, _ = await call(server, "GET", "/api/v1/retention/storage", tokens["admin"])
        assert status == 200
        return body

    live = await use()
    assert [(c["camera"], c["site"], c["segments"], c["bytes"]) for c in live["cameras"]] == [
        ("cam-1", "north", 18, 18 * size),
        ("cam-3", "south", 4, 4 * size),
    ]
    assert live["cameras"][0]["streams"]["sub"]["segments"] == 3
    assert [(x["site"], x["cameras"], x["segments"]) for x in live["sites"]] == [("north", 1, 18), ("south", 1, 4)]
    assert await UsageCache(pool, clock=clock).refresh()  # past days now come from the figures kept
    assert await pool.fetchval("SELECT count(*) FROM retention_usage_days") == 3
    assert await use() == live
