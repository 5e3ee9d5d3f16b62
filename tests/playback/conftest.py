"""Fixtures of the playback tests: the api's playback routes on a real socket, over real Postgres, S3 and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from argus_api import cameras, playback
from argus_api.playback import PlaybackConfig
from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus, topology
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.http import VERIFIER_KEY, auth_middleware, problem_middleware
from argus_core.identity import TokenConfig, TokenIssuer, TokenVerifier, generate_keypair
from argus_core.storage import ObjectStore, S3Config
from argus_devstack.s3 import S3Target
from argus_recorder.index import Index
from tests.playback.support import Api

ServerFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(DatabaseConfig(url=database_url, pool_min=1, pool_max=6))
    try:
        await migrate(p)
        yield p
    finally:
        await p.close()


@pytest.fixture
def index(pool: asyncpg.Pool) -> Index:
    return Index(pool, timeout_s=30, lookback_s=86400)


@pytest.fixture
async def store(s3_bucket: S3Target) -> AsyncIterator[ObjectStore]:
    s = ObjectStore(s3_config(s3_bucket))
    try:
        yield s
    finally:
        await s.close()


def s3_config(target: S3Target) -> S3Config:
    return S3Config(
        endpoint=target.endpoint,
        access_key=target.access_key,
        secret_key=target.secret_key,
        region=target.region,
        secure=target.secure,
        recordings_bucket=target.bucket,
    )


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="playback-test")
    try:
        await b.ensure(topology())
        yield b
    finally:
        await b.drain()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = generate_keypair()
    (tmp_path / "t1.key").write_bytes(private)
    (tmp_path / "t1.pem").write_bytes(public)
    return tmp_path / "t1.key", tmp_path / "t1.pem"


@pytest.fixture
def issuer(keys: tuple[Path, Path]) -> TokenIssuer:
    return TokenIssuer.from_file(str(keys[0]), issuer="argus", audience="argus", ttl_s=3600)


@pytest.fixture
async def make_server(
    pool: asyncpg.Pool, store: ObjectStore, bus: Bus, keys: tuple[Path, Path], issuer: TokenIssuer
) -> AsyncIterator[ServerFactory]:
    """Start the playback routes as the api wires them (`playback.routes`, `playback.setup`) with `config`."""
    servers: list[TestServer] = []

    async def factory(config: PlaybackConfig | None = None, *, audited: bool = True) -> Api:
        verifier = TokenVerifier.from_config(TokenConfig(public_keys=(str(keys[1]),)))
        app = web.Application(middlewares=[problem_middleware, auth_middleware])
        app[VERIFIER_KEY] = verifier
        app[cameras.POOL_KEY] = pool
        playback.routes(app)
        registry = CollectorRegistry()
        playback.setup(
            app,
            registry=registry,
            store=store,
            config=config or PlaybackConfig(),
            emitter=AuditEmitter(bus, "api") if audited else None,
            bus=bus,
            pod="api-test",
        )
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Api(f"http://127.0.0.1:{server.port}", issuer, app, registry)

    try:
        yield factory
    finally:
        for server in servers:
            await server.close()


@pytest.fixture
async def api(make_server: ServerFactory) -> Api:
    return await make_server()
