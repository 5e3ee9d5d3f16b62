"""The api's audit routes: only auditors read, exports parse (and re-verify without Argus), reads are audited."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from argus_api import audit, cameras
from argus_audit.appender import ChainAppender
from argus_audit.checkpointer import Checkpointer
from argus_core.audit.checkpoints import CheckpointKeys, CheckpointSigner, CheckpointStore
from argus_core.audit.emitter import AuditEmitter
from argus_core.audit.entries import CSV_COLUMNS
from argus_core.bus import Bus, decode, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_STREAM
from argus_core.http import VERIFIER_KEY, auth_middleware, problem_middleware
from argus_core.identity import ACTIONS, Grant, TokenConfig, TokenIssuer, TokenVerifier, generate_keypair
from argus_core.storage import ObjectStore
from tests.audit.support import T0, events, tamper


@pytest.fixture
def issuer(tmp_path: Path) -> TokenIssuer:
    private, public = generate_keypair()
    (tmp_path / "t1.key").write_bytes(private)
    (tmp_path / "t1.pem").write_bytes(public)
    return TokenIssuer.from_file(str(tmp_path / "t1.key"), issuer="argus", audience="argus", ttl_s=300)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="api-test")
    try:
        await bus.ensure(topology())
        yield bus
    finally:
        await bus.drain()


@pytest.fixture
async def server(
    pool: asyncpg.Pool,
    tmp_path: Path,
    object_store: ObjectStore,
    keys: CheckpointKeys,
    bus: Bus,
    issuer: TokenIssuer,
) -> AsyncIterator[TestServer]:
    verifier = TokenVerifier.from_config(TokenConfig(public_keys=(str(tmp_path / "t1.pem"),)))
    app = web.Application(middlewares=[problem_middleware, auth_middleware])
    app[VERIFIER_KEY] = verifier
    app[cameras.POOL_KEY] = pool
    audit.routes(app)
    audit.setup(app, store=object_store, keys=keys, emitter=AuditEmitter(bus, "api"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def filled(pool: asyncpg.Pool, signer: CheckpointSigner, checkpoints: CheckpointStore) -> None:
    appender = ChainAppender(pool)
    await appender.append(events(3, actor="op-1", camera="cam-1", action="live.view.start", at_ns=T0))
    await appender.append(
        events(2, actor="pc-12", camera="cam-2", action="playback.export", service="api", at_ns=T0 + 3600 * 10**9)
    )
    await Checkpointer(pool, checkpoints, signer).write()
    await appender.append(events(1, actor="=cmd|' /C calc'!A0", camera="cam-3", at_ns=T0 + 7200 * 10**9))


async def get(server: TestServer, path: str, token: str) -> tuple[int, bytes, dict[str, str]]:
    async with (
        ClientSession() as http,
        http.get(server.make_url(path), headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


def token(issuer: TokenIssuer, role: str) -> str:
    return issuer.issue(f"user-{role}", [role], [Grant(actions=ACTIONS, cameras=("*",))])


async def audit_reads(bus: Bus) -> list[m.AuditEvent]:
    info = await bus.js.stream_info(AUDIT_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(AUDIT_STREAM, seq)
        assert msg.data is not None
        assert msg.subject is not None
        found.append(decode(s.AUDIT, msg.data, msg.subject))
    return found


@pytest.mark.parametrize("role", ["admin", "supervisor", "operator", "partner"])
@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/api/v1/audit/entries", "audit.query"),
        ("/api/v1/audit/export?format=csv", "audit.export"),
        ("/api/v1/audit/verify", "audit.verify"),
    ],
)
async def test_only_the_auditor_role_reads_the_log(
    server: TestServer, issuer: TokenIssuer, bus: Bus, filled: None, role: str, path: str, action: str
) -> None:
    status, body, _ = await get(server, path, token(issuer, role))  # every grant there is, but not the role
    assert status == 403
    assert json.loads(body)["detail"] == "only the auditor role reads the audit log"
    (denied,) = await audit_reads(bus)  # the attempt itself is on the record
    assert (denied.action, denied.outcome, denied.actor.subject) == (action, "denied", f"user-{role}")


async def test_an_auditor_searches_the_log_and_the_search_is_audited(
    server: TestServer, issuer: TokenIssuer, bus: Bus, filled: None
) -> None:
    auditor = token(issuer, "auditor")
    status, body, _ = await get(server, "/api/v1/audit/entries?camera=cam-2", auditor)
    assert status == 200
    found = json.loads(body)
    assert [e["seq"] for e in found["entries"]] == [4, 5]
    assert found["entries"][0]["event"]["actor"]["subject"] == "pc-12"
    assert found["next_after"] is None
    status, body, _ = await get(server, "/api/v1/audit/entries?limit=2&after=2", auditor)
    assert [e["seq"] for e in json.loads(body)["entries"]] == [3, 4]
    assert json.loads(body)["next_after"] == 4
    status, body, _ = await get(server, "/api/v1/audit/entries?from=2026-01-01T00:30:00Z&until=1767232800", auditor)
    assert [e["seq"] for e in json.loads(body)["entries"]] == [4, 5]
    status, body, _ = await get(server, "/api/v1/audit/entries?action=playback.*&actor=pc-12", auditor)
    assert [e["seq"] for e in json.loads(body)["entries"]] == [4, 5]
    reads = await audit_reads(bus)
    assert [r.action for r in reads] == ["audit.query"] * 4
    assert reads[0].details == {"camera": "cam-2"}
    assert reads[0].actor.subject == "user-auditor"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("from=yesterday", "from"),
        ("until=2026-01-01T00:00:00", "until"),
        ("limit=0", "limit"),
        ("outcome=x", "outcome"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(
    server: TestServer, issuer: TokenIssuer, query: str, parameter: str
) -> None:
    status, body, _ = await get(server, f"/api/v1/audit/entries?{query}", token(issuer, "auditor"))
    assert status == 400
    assert json.loads(body)["parameter"] == parameter


async def test_the_csv_export_parses_and_defuses_formulas(
    server: TestServer, issuer: TokenIssuer, filled: None
) -> None:
    status, body, headers = await get(server, "/api/v1/audit/export?format=csv", token(issuer, "auditor"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[3]["actor"] == "pc-12"
    assert rows[3]["action"] == "playback.export"
    assert rows[3]["at"] == "2026-01-01T01:00:00.000000000Z"
    assert rows[0]["roles"] == "operator"
    assert rows[5]["actor"] == "'=cmd|' /C calc'!A0"  # a spreadsheet shows it, never runs it
    assert len(rows[0]["hash"]) == 64
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    status, body, _ = await get(server, "/api/v1/audit/export?format=csv&camera=none", token(issuer, "auditor"))
    assert body.decode().splitlines() == [",".join(CSV_COLUMNS)]


async def test_the_json_lines_export_can_be_verified_without_argus(
    server: TestServer, issuer: TokenIssuer, filled: None
) -> None:
    status, body, headers = await get(server, "/api/v1/audit/export?format=jsonl", token(issuer, "auditor"))
    assert status == 200
    assert headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5, 6]
    prev = bytes(32)
    for entry in lines:  # the regulator's own check, from the documented formula
        assert entry["prev_hash"] == prev.hex()
        material = b"argus-audit-v1\n%d\n%d\n" % (entry["seq"], entry["recorded_ns"]) + prev + entry["body"].encode()
        assert hashlib.sha256(material).hexdigest() == entry["hash"]
        assert json.loads(entry["body"]) == entry["event"]
        prev = bytes.fromhex(entry["hash"])


async def test_an_auditor_verifies_the_log(
    server: TestServer, issuer: TokenIssuer, pool: asyncpg.Pool, bus: Bus, filled: None
) -> None:
    auditor = token(issuer, "auditor")
    status, body, _ = await get(server, "/api/v1/audit/verify", auditor)
    assert status == 200
    report = json.loads(body)
    assert report["ok"] is True
    assert (report["head_seq"], report["checkpoints"], report["checkpoint_seq"]) == (6, "checked", 5)
    await tamper(pool, "DELETE FROM audit_log WHERE seq = 2")
    status, body, _ = await get(server, "/api/v1/audit/verify?checkpoints=false", auditor)
    report = json.loads(body)
    assert report["ok"] is False
    assert (report["problem"]["kind"], report["problem"]["seq"]) == ("removed", 2)
    assert report["checkpoints"] == "not_checked"
    reads = await audit_reads(bus)
    assert [(r.action, r.details["ok"]) for r in reads] == [("audit.verify", "true"), ("audit.verify", "false")]
