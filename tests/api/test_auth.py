"""Token checks at the api's HTTP edge: 401 with a reason for a missing, bad or expired token; 403 without scope."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from argus_api import cameras
from argus_api.service import build_app
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.identity import Grant, TokenConfig, TokenIssuer, TokenVerifier, generate_keypair


@pytest.fixture
def issuer(tmp_path: Path) -> TokenIssuer:
    private, public = generate_keypair()
    (tmp_path / "k1.key").write_bytes(private)
    (tmp_path / "k1.pem").write_bytes(public)
    return TokenIssuer.from_file(str(tmp_path / "k1.key"), issuer="argus", audience="argus", ttl_s=60)


@pytest.fixture
async def server(database_url: str, tmp_path: Path, issuer: TokenIssuer) -> AsyncIterator[TestServer]:
    pool = await create_pool(DatabaseConfig(url=database_url))
    await migrate(pool)
    await pool.execute(
        "INSERT INTO cameras (id, name, main_url) VALUES ('cam-1', 'High St', 'rtsp://a'), "
        "('cam-2', 'Market Sq', 'rtsp://b')"
    )
    app = build_app(TokenVerifier.from_config(TokenConfig(public_keys=(str(tmp_path / "k1.pem"),))))
    app[cameras.POOL_KEY] = pool
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
        await pool.close()


async def get(
    server: TestServer, path: str, token: str | None = None, raw: str | None = None
) -> tuple[int, dict[str, object], str]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if raw is not None:
        headers["Authorization"] = raw
    async with ClientSession() as http, http.get(server.make_url(path), headers=headers) as response:
        return response.status, await response.json(content_type=None), response.headers.get("WWW-Authenticate", "")


async def test_missing_token_is_401_with_reason(server: TestServer) -> None:
    status, body, challenge = await get(server, "/api/v1/cameras")
    assert status == 401
    assert body["detail"] == "missing bearer token"
    assert challenge.startswith("Bearer")


async def test_malformed_header_and_garbage_token_are_401(server: TestServer) -> None:
    status, body, _ = await get(server, "/api/v1/cameras", raw="Basic dXNlcjpwYXNz")
    assert status == 401
    assert "malformed" in str(body["detail"])
    status, body, _ = await get(server, "/api/v1/cameras", token="abc.def.ghi")
    assert (status, body["detail"]) == (401, "malformed token")


async def test_expired_token_is_401(server: TestServer, issuer: TokenIssuer) -> None:
    token = issuer.issue("op", ["operator"], [Grant(actions=("live",), cameras=("*",))], now=time.time() - 7200)
    status, body, challenge = await get(server, "/api/v1/cameras", token)
    assert (status, body["detail"]) == (401, "token expired")
    assert 'error="invalid_token"' in challenge


async def test_forged_token_is_401(server: TestServer) -> None:
    private, _ = generate_keypair()
    forged = TokenIssuer(private, "k1", issuer="argus", audience="argus", ttl_s=60).issue("x", ["admin"], [])
    status, body, _ = await get(server, "/api/v1/whoami", forged)
    assert (status, body["detail"]) == (401, "token signature is invalid")


async def test_valid_token_without_scope_is_403_and_with_scope_200(server: TestServer, issuer: TokenIssuer) -> None:
    partner = issuer.issue("pc-1", ["partner"], [Grant(actions=("live",), cameras=("cam-1",))], org="police")
    status, body, _ = await get(server, "/api/v1/cameras/cam-2", partner)
    assert status == 403
    assert body["camera"] == "cam-2"
    status, body, _ = await get(server, "/api/v1/cameras/cam-1", partner)
    assert (status, body["name"]) == (200, "High St")
    status, body, _ = await get(server, "/api/v1/cameras", partner)
    assert status == 200
    assert [c["id"] for c in body["cameras"]] == ["cam-1"]  # type: ignore[attr-defined]
    status, body, _ = await get(server, "/api/v1/whoami", partner)
    assert body["subject"] == "pc-1"


async def test_unknown_camera_is_404_for_a_caller_granted_every_camera(server: TestServer, issuer: TokenIssuer) -> None:
    token = issuer.issue("sup", ["supervisor"], [Grant(actions=("live", "playback"), cameras=("*",))])
    status, body, _ = await get(server, "/api/v1/cameras/nope", token)
    assert status == 404
    assert body["type"] == "about:blank"


async def test_console_page_needs_no_token(server: TestServer) -> None:
    async with ClientSession() as http, http.get(server.make_url("/")) as response:
        assert response.status == 200
        assert "Argus" in await response.text()
