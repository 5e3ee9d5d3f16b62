"""The Docker backend: the same attributes and life cycle as the process servers (needs a Docker engine)."""

from __future__ import annotations

import asyncio
import io

import asyncpg
import nats
import pytest

from argus_devstack.containers import (
    MinioContainerServer,
    NatsContainerServer,
    PostgresContainerServer,
    docker_available,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not docker_available(), reason="no Docker engine answers `docker info`"),
]


async def test_nats_container_keeps_limits_and_streams_across_restart() -> None:
    server = NatsContainerServer()
    try:
        await asyncio.to_thread(server.start)
        port = server.port
        nc = await nats.connect(server.url)
        try:
            assert nc.max_payload == 8 * 1024 * 1024
            js = nc.jetstream()
            await js.add_stream(name="C", subjects=["c.>"])
            await js.publish("c.a", b"x" * (5 * 1024 * 1024))
        finally:
            await nc.close()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        assert server.port == port
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().stream_info("C")
            assert info.state.messages == 1
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(server.close)


async def test_postgres_container_databases_and_restart() -> None:
    server = PostgresContainerServer()
    try:
        await asyncio.to_thread(server.start)
        dsn = await asyncio.to_thread(server.create_database, "t_container")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE k (v int); INSERT INTO k VALUES (1)")
        finally:
            await conn.close()
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM k") == 1
        finally:
            await conn.close()
        await asyncio.to_thread(server.drop_database, "t_container")
    finally:
        await asyncio.to_thread(server.close)


def test_minio_container_round_trip_and_restart() -> None:
    server = MinioContainerServer()
    try:
        server.start()
        target = server.make_bucket("container-bucket")
        client = server.client()
        client.put_object(target.bucket, "k", io.BytesIO(b"kept"), 4)
        server.restart()
        response = client.get_object(target.bucket, "k")
        try:
            assert response.read() == b"kept"
        finally:
            response.close()
            response.release_conn()
    finally:
        server.close()
