"""PTZ over the api's HTTP routes: token, grant and priority at the edge, the ptz service behind the bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from argus_api import ptz
from argus_api.service import build_app
from argus_core.bus import Bus
from argus_core.identity import Grant, TokenConfig, TokenIssuer, TokenVerifier, generate_keypair
from argus_core.runtime import Runtime, RuntimeConfig
from argus_simcam.ptz import PtzModel
from tests.ptz.support import FAST, eventually, ptz_pod, world


@pytest.fixture
def issuer(tmp_path: Path) -> TokenIssuer:
    private, public = generate_keypair()
    (tmp_path / "k1.key").write_bytes(private)
    (tmp_path / "k1.pem").write_bytes(public)
    return TokenIssuer.from_file(str(tmp_path / "k1.key"), issuer="argus", audience="argus", ttl_s=300)


@pytest.fixture
def tokens(issuer: TokenIssuer) -> dict[str, str]:
    ptz_on_cam1 = Grant(actions=("ptz",), cameras=("cam-1",))
    everything = Grant(actions=("ptz", "configure"), cameras=("*",))
    return {
        "ann": issuer.issue("op-ann", ["operator"], [ptz_on_cam1]),
        "bob": issuer.issue("op-bob", ["operator"], [ptz_on_cam1]),
        "cat": issuer.issue("sup-cat", ["supervisor"], [everything]),
        "viewer": issuer.issue("viewer", ["operator"], [Grant(actions=("live",), cameras=("*",))]),
    }


@pytest.fixture
async def api(tmp_path: Path, issuer: TokenIssuer, nats_url: str) -> AsyncIterator[TestServer]:
    app = build_app(TokenVerifier.from_config(TokenConfig(public_keys=(str(tmp_path / "k1.pem"),))))
    bus = await Bus.connect(nats_url, name="api")
    app[ptz.BUS_KEY] = bus
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
        await bus.drain()


async def call(
    server: TestServer, method: str, path: str, token: str, body: bytes | None = None
) -> tuple[int, dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        ClientSession() as http,
        http.request(method, server.make_url(path), data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None), response.content_type


async def test_ptz_over_http(nats_url: str, database_url: str, api: TestServer, tokens: dict[str, str]) -> None:
    base = "/api/v1/cameras/cam-1/ptz"
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w:
        status, body, kind = await call(api, "POST", f"{base}/absolute", tokens["ann"], b'{"pan": 0.3}')
        assert (status, kind, body["title"]) == (503, "application/problem+json", "Service Unavailable")

        async with ptz_pod(w, lease_idle_s=30):
            cam = w.cameras["cam-1"]
            status, body, _ = await call(api, "POST", f"{base}/absolute", tokens["ann"], b'{"pan": 0.3, "zoom": 0.2}')
            assert status == 200, body
            assert (body["ok"], body["holder"]) == (True, "op-ann")
            await eventually(lambda: abs(cam.position()[0] - 0.3) < 1e-3)

            status, body, kind = await call(api, "POST", f"{base}/absolute", tokens["bob"], b'{"pan": -0.3}')
            assert (status, kind, body["error"], body["holder"]) == (
                409,
                "application/problem+json",
                "refused",
                "op-ann",
            )
            assert body["lease_until_ns"] > 0
            assert "op-ann" in body["detail"]

            status, body, _ = await call(api, "POST", f"{base}/continuous", tokens["cat"], b'{"pan": 0.5}')
            assert status == 200, body
            assert (body["holder"], body["moving"]) == ("sup-cat", True)
            status, body, _ = await call(api, "POST", f"{base}/stop", tokens["cat"])
            assert status == 200, body

            status, body, _ = await call(api, "POST", f"{base}/absolute", tokens["cat"], b'{"tilt": 4}')
            assert (status, body["error"], body["argument"]) == (422, "out_of_range", "tilt")
            assert (body["valid_min"], body["valid_max"]) == (-1.0, 1.0)

            status, body, _ = await call(api, "GET", f"{base}/status", tokens["ann"])
            assert status == 200, body
            assert body["holder"] == "sup-cat"
            assert body["pan"] == pytest.approx(cam.position()[0], abs=1e-3)

            status, body, _ = await call(api, "POST", f"{base}/set_preset", tokens["cat"], b'{"name": "Gate"}')
            assert status == 200, body
            assert list(body["presets"].values()) == ["Gate"]
            tour = b'{"name": "night", "steps": [{"preset": "1", "dwell_s": 5}]}'
            status, body, _ = await call(api, "POST", f"{base}/tour_save", tokens["ann"], tour)
            assert (status, body["title"]) == (403, "Forbidden")  # configuring needs the configure grant
            status, body, _ = await call(api, "POST", f"{base}/tour_save", tokens["cat"], tour)
            assert status == 200, body
            status, body, _ = await call(api, "GET", f"{base}/tours", tokens["ann"])
            assert [t["name"] for t in body["tours"]] == ["night"]

            status, body, _ = await call(api, "POST", f"{base}/absolute", tokens["viewer"], b'{"pan": 0}')
            assert status == 403
            status, body, _ = await call(api, "POST", "/api/v1/cameras/cam-2/ptz/absolute", tokens["ann"], b"{}")
            assert status == 403  # no grant on cam-2
            status, body, _ = await call(api, "POST", "/api/v1/cameras/cam-9/ptz/status", tokens["cat"])
            assert (status, body["error"]) == (404, "unknown_camera")
            status, body, _ = await call(api, "POST", f"{base}/spin", tokens["cat"])
            assert status == 404
            status, body, _ = await call(api, "POST", f"{base}/absolute", tokens["cat"], b'{"pan": "left"}')
            assert (status, body["error"]) == (422, "bad_request")
            status, body, _ = await call(api, "POST", f"{base}/absolute", tokens["cat"], b"[1, 2]")
            assert status == 400
            status, body, _ = await call(api, "GET", f"{base}/stop", tokens["cat"])
            assert status == 405
            status, body, _ = await call(api, "POST", f"{base}/absolute", tokens["cat"], b"{}")
            assert (status, body["error"]) == (422, "bad_request")  # nothing to move


async def test_the_routes_find_the_bus_of_the_api_runtime(
    nats_url: str, database_url: str, tmp_path: Path, tokens: dict[str, str]
) -> None:
    """Registered as the api registers them (`ptz.routes(app)` in `build_app`), with no BUS_KEY set."""
    app = build_app(TokenVerifier.from_config(TokenConfig(public_keys=(str(tmp_path / "k1.pem"),))))
    config = RuntimeConfig(http_host="127.0.0.1", http_port=0, nats_url=nats_url, shutdown_budget_s=5)
    async with (
        world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w,
        ptz_pod(w),
        Runtime("api", config, app=app) as rt,
    ):
        await rt.connect_bus()
        headers = {"Authorization": f"Bearer {tokens['ann']}"}
        url = f"http://127.0.0.1:{rt.http_port}/api/v1/cameras/cam-1/ptz/status"
        async with ClientSession() as http, http.get(url, headers=headers) as response:
            body = await response.json()
        assert response.status == 200, body
        assert body["ok"] is True
