"""S3Server: buckets and objects through the minio client, restarts on the same port, the environment kind."""

from __future__ import annotations

import asyncio
import io
import os

import pytest
from minio import Minio

from argus_devstack.backends import S3Handle
from argus_devstack.errors import ServerStateError
from argus_devstack.probes import http_answers
from argus_devstack.pytest_plugin import S3Factory, bucket_name_for
from argus_devstack.s3 import ENV_ACCESS_KEY, ENV_ENDPOINT, ENV_SECRET_KEY, S3Server, S3Target


def client_for(target: S3Target) -> Minio:
    return Minio(
        target.endpoint,
        access_key=target.access_key,
        secret_key=target.secret_key,
        secure=target.secure,
        region=target.region,
    )


Metadata = dict[str, str | list[str] | tuple[str]]


def put_and_get(target: S3Target, key: str, data: bytes, metadata: Metadata) -> tuple[bytes, dict[str, str]]:
    client = client_for(target)
    client.put_object(target.bucket, key, io.BytesIO(data), len(data), content_type="video/mp4", metadata=metadata)
    response = client.get_object(target.bucket, key)
    try:
        body = response.read()
    finally:
        response.close()
        response.release_conn()
    stat = client.stat_object(target.bucket, key)
    assert stat.metadata is not None
    found = {k.lower(): v for k, v in stat.metadata.items() if k.lower().startswith("x-amz-meta-")}
    return body, found


async def test_bucket_round_trip_with_metadata(s3_bucket: S3Target) -> None:
    assert s3_bucket.endpoint.startswith("127.0.0.1:") or os.environ.get(ENV_ENDPOINT)
    assert s3_bucket.region == "us-east-1"
    data = os.urandom(256 * 1024)
    body, metadata = await asyncio.to_thread(
        put_and_get, s3_bucket, "cam-1/segment-0001.mp4", data, {"camera": "cam-1", "start": "2026-01-01T00:00:00Z"}
    )
    assert body == data
    assert metadata == {"x-amz-meta-camera": "cam-1", "x-amz-meta-start": "2026-01-01T00:00:00Z"}


async def test_each_test_gets_a_fresh_bucket(s3_bucket: S3Target, request: pytest.FixtureRequest) -> None:
    assert s3_bucket.bucket.startswith(bucket_name_for(request.node.nodeid)[:15])
    objects = await asyncio.to_thread(lambda: list(client_for(s3_bucket).list_objects(s3_bucket.bucket)))
    assert objects == []


def test_object_lock_bucket(s3_server: S3Handle) -> None:
    name = bucket_name_for("object-lock")
    target = s3_server.make_bucket(name, object_lock=True)
    config = s3_server.client().get_object_lock_config(target.bucket)
    assert config is not None


@pytest.mark.slow
async def test_restart_on_the_same_port(s3_factory: S3Factory) -> None:
    server = await asyncio.to_thread(s3_factory)
    endpoint = server.endpoint
    await asyncio.to_thread(server.make_bucket, "before-outage")

    await asyncio.to_thread(server.stop)
    assert not server.running
    assert not http_answers(f"http://{endpoint}/")
    await asyncio.to_thread(server.start)
    assert server.endpoint == endpoint

    # moto forgets everything on restart; uploads after the outage are what matters.
    target = await asyncio.to_thread(server.make_bucket, "after-outage")
    body, _ = await asyncio.to_thread(put_and_get, target, "k", b"after", {})
    assert body == b"after"


@pytest.mark.slow
def test_kill_then_start(s3_factory: S3Factory) -> None:
    server = s3_factory()
    endpoint = server.endpoint
    server.kill()
    assert not server.running
    server.start()
    assert server.endpoint == endpoint
    assert http_answers(f"http://{endpoint}/")


def test_endpoint_from_the_environment(s3_server: S3Handle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ENDPOINT, f"http://{s3_server.endpoint}")
    monkeypatch.setenv(ENV_ACCESS_KEY, s3_server.access_key)
    monkeypatch.setenv(ENV_SECRET_KEY, s3_server.secret_key)
    with S3Server() as server:
        assert server.kind == "env"
        assert server.endpoint == s3_server.endpoint
        assert server.port == s3_server.port
        assert server.running
        assert server.pid is None, "nothing is started for an endpoint from the environment"
        name = bucket_name_for("from-env")
        target = server.make_bucket(name)
        assert s3_server.client().bucket_exists(target.bucket)
        with pytest.raises(ServerStateError):
            server.stop()
        with pytest.raises(ServerStateError):
            server.kill()


def test_moto_kind_by_default_without_minio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ENDPOINT, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    server = S3Server()
    try:
        assert server.kind == "moto"
    finally:
        server.close()
