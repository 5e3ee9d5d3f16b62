"""Object storage through the minio client against a real S3 server."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from urllib.request import urlopen

import pytest

from argus_core.storage import ObjectNotFound, ObjectStore, S3Config, StorageUnavailable
from argus_devstack.s3 import S3Target


def config_for(target: S3Target, **overrides: str) -> S3Config:
    return S3Config(
        endpoint=target.endpoint,
        access_key=target.access_key,
        secret_key=target.secret_key,
        region=target.region,
        secure=target.secure,
        recordings_bucket=overrides.get("recordings", target.bucket),
        evidence_bucket=overrides.get("evidence", target.bucket + "-evidence"),
        audit_bucket=overrides.get("audit", target.bucket + "-audit"),
    )


async def test_object_round_trips_with_metadata(s3_bucket: S3Target) -> None:
    store = ObjectStore(config_for(s3_bucket))
    try:
        data = bytes(range(256)) * 4096
        put = await store.put(
            s3_bucket.bucket,
            "cam-1/2026/11/21/000000.mp4",
            data,
            content_type="video/mp4",
            metadata={"camera": "cam-1", "sha256": hashlib.sha256(data).hexdigest()},
        )
        assert put.sha256 == hashlib.sha256(data).hexdigest()
        body, info = await store.get(s3_bucket.bucket, "cam-1/2026/11/21/000000.mp4")
        assert body == data
        assert info.metadata["camera"] == "cam-1"
        assert info.metadata["sha256"] == put.sha256
        assert info.content_type == "video/mp4"
        part, _ = await store.get(s3_bucket.bucket, "cam-1/2026/11/21/000000.mp4", offset=10, length=20)
        assert part == data[10:30]
        stat = await store.stat(s3_bucket.bucket, "cam-1/2026/11/21/000000.mp4")
        assert stat.size == len(data)
        assert await store.list_keys(s3_bucket.bucket, "cam-1/") == ["cam-1/2026/11/21/000000.mp4"]
        url = await store.presigned_get(s3_bucket.bucket, "cam-1/2026/11/21/000000.mp4", timedelta(minutes=5))
        fetched = await asyncio.to_thread(lambda: urlopen(url, timeout=10).read())  # noqa: S310 - loopback
        assert fetched == data
        assert await store.delete_many(s3_bucket.bucket, ["cam-1/2026/11/21/000000.mp4"]) == []
        with pytest.raises(ObjectNotFound):
            await store.get(s3_bucket.bucket, "cam-1/2026/11/21/000000.mp4")
    finally:
        await store.close()
        await store.close()  # twice is fine


async def test_bucket_bootstrap_is_idempotent_and_concurrent(s3_bucket: S3Target) -> None:
    stores = [ObjectStore(config_for(s3_bucket, recordings=s3_bucket.bucket + "-rec")) for _ in range(3)]
    try:
        await asyncio.gather(*(store.ensure_buckets() for store in stores))
        await stores[0].ensure_buckets()
        put = await stores[0].put(s3_bucket.bucket + "-evidence", "exhibit/1.mp4", b"evidence")
        assert put.size == 8
    finally:
        for store in stores:
            await store.close()


async def test_unreachable_store_is_a_clear_error(s3_bucket: S3Target) -> None:
    target = S3Target(
        endpoint="127.0.0.1:9",  # the discard port: nothing listens
        access_key="a",
        secret_key="b",
        region="us-east-1",
        secure=False,
        bucket="argus-x",
    )
    store = ObjectStore(config_for(target))
    try:
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await store.put("argus-x", "k", b"1")
    finally:
        await store.close()
