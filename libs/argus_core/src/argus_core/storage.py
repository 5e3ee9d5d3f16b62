"""S3 object storage through the `minio` client, kept off the event loop.

The minio client is synchronous, so every call runs in this store's own bounded thread pool (never the loop's
default executor, which other work shares). Uploads carry an `x-amz-checksum-sha256` header, so the server checks
what it stored and object-locked buckets accept them; the SHA-256 is returned for the index.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import msgspec
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from argus_core.errors import ArgusError

log = logging.getLogger(__name__)

T = TypeVar("T")


class S3Config(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_S3_*`: where the object store is and which buckets Argus uses."""

    endpoint: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d+$|^[A-Za-z0-9.\-]+$")]
    access_key: Annotated[str, msgspec.Meta(min_length=1)]
    secret_key: Annotated[str, msgspec.Meta(min_length=1)]
    region: str = "us-east-1"
    secure: bool = False
    recordings_bucket: str = "argus-recordings"
    evidence_bucket: str = "argus-evidence"
    audit_bucket: str = "argus-audit"
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # Make the recordings bucket with object lock (and so versioning) when it is created, so that evidence holds
    # can also put S3 legal holds on held segments (the store then refuses to delete them). Only takes effect when
    # the bucket does not exist yet: object lock cannot be turned on for an existing bucket.
    recordings_object_lock: bool = False


class StorageError(ArgusError):
    """The object store refused or failed a request."""


class ObjectNotFound(StorageError):
    pass


class StorageUnavailable(StorageError):
    """The object store could not be reached."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    etag: str
    metadata: dict[str, str]
    content_type: str


@dataclass(frozen=True)
class PutResult:
    bucket: str
    key: str
    etag: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ListedObject:
    """One entry of a listing: an object, or with versions one version of it (or a delete marker)."""

    key: str
    size: int
    last_modified_ns: int  # 0 when the store did not say
    version_id: str | None = None
    is_latest: bool = True
    is_delete_marker: bool = False


def _listed(o: Any) -> ListedObject:
    modified = o.last_modified
    return ListedObject(
        key=o.object_name or "",
        size=int(o.size or 0),
        last_modified_ns=int(modified.timestamp() * 1_000_000) * 1000 if modified is not None else 0,
        version_id=o.version_id,
        is_latest=str(o.is_latest).lower() != "false",
        is_delete_marker=bool(o.is_delete_marker),
    )


def _meta_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    prefix = "x-amz-meta-"
    return {k[len(prefix) :].lower(): v for k, v in headers.items() if k.lower().startswith(prefix)}


class ObjectStore:
    """Async facade over one minio client and its own thread pool."""

    def __init__(self, config: S3Config) -> None:
        self._config = config
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, config.timeout_s), read=config.timeout_s),
            maxsize=config.workers,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            config.endpoint,
            access_key=config.access_key,
            secret_key=config.secret_key,
            secure=config.secure,
            region=config.region,
            http_client=http,
        )
        self._http = http
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="s3")
        self._closed = False
        self._inflight: set[asyncio.Future[Any]] = set()

    @property
    def config(self) -> S3Config:
        return self._config

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise StorageError("the object store is closed")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        try:
            return await asyncio.shield(future)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                raise ObjectNotFound(f"{exc.bucket_name}/{exc.object_name}: {exc.code}") from exc
            raise StorageError(f"{exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store at {self._config.endpoint} unreachable: {exc}") from exc

    async def ensure_bucket(self, bucket: str, *, object_lock: bool = False) -> bool:
        """Create `bucket` if missing; True if this call created it. Two callers at once are both fine."""
        if await self._call(self._client.bucket_exists, bucket):
            return False
        try:
            await self._call(self._client.make_bucket, bucket, self._config.region, object_lock)
        except StorageError as exc:
            if "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc):
                return False
            raise
        log.info("created bucket %s", bucket, extra={"bucket": bucket, "object_lock": object_lock})
        return True

    async def ensure_buckets(self) -> None:
        await self.ensure_bucket(self._config.recordings_bucket, object_lock=self._config.recordings_object_lock)
        await self.ensure_bucket(self._config.evidence_bucket, object_lock=True)
        await self.ensure_bucket(self._config.audit_bucket, object_lock=True)

    async def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        sha256: str | None = None,
    ) -> PutResult:
        """Store `data`; `sha256` (hex), when the caller has it already, saves hashing the bytes again (the server
        checks it against what it received either way)."""
        digest = bytes.fromhex(sha256) if sha256 else hashlib.sha256(data).digest()
        headers: dict[str, str] = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        headers["x-amz-checksum-sha256"] = base64.b64encode(digest).decode()
        headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
        result = await self._call(
            self._client.put_object,
            bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=headers,  # type: ignore[arg-type,unused-ignore]
        )
        return PutResult(bucket, key, result.etag or "", digest.hex(), len(data))

    async def get(self, bucket: str, key: str, *, offset: int = 0, length: int = 0) -> tuple[bytes, StoredObject]:
        def read() -> tuple[bytes, StoredObject]:
            response = self._client.get_object(bucket, key, offset=offset, length=length)
            try:
                body = response.read()
                headers = {k.lower(): v for k, v in response.headers.items()}
            finally:
                response.close()
                response.release_conn()
            info = StoredObject(
                bucket,
                key,
                int(headers.get("content-length", len(body))),
                headers.get("etag", "").strip('"'),
                _meta_from_headers(headers),
                headers.get("content-type", ""),
            )
            return body, info

        return await self._call(read)

    async def stat(self, bucket: str, key: str) -> StoredObject:
        st = await self._call(self._client.stat_object, bucket, key)
        headers = dict(st.metadata or {})
        return StoredObject(
            bucket,
            key,
            st.size or 0,
            (st.etag or "").strip('"'),
            _meta_from_headers(headers),
            st.content_type or "",
        )

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        def listing() -> list[str]:
            return [o.object_name for o in self._client.list_objects(bucket, prefix=prefix, recursive=True)]

        return await self._call(listing)

    async def delete_many(self, bucket: str, keys: Iterable[str]) -> list[str]:
        """Multi-object delete; returns the keys the store refused (with the reason logged)."""
        objects = [DeleteObject(k) for k in keys]

        def delete() -> list[str]:
            failed: list[str] = []
            for error in self._client.remove_objects(bucket, objects):
                log.warning("delete refused %s/%s: %s", bucket, error.name, error.message)
                failed.append(error.name or "")
            return failed

        return await self._call(delete)

    async def presigned_get(self, bucket: str, key: str, expires: timedelta) -> str:
        return await self._call(self._client.presigned_get_object, bucket, key, expires)

    async def set_legal_hold(self, bucket: str, key: str, on: bool) -> None:
        fn = self._client.enable_object_legal_hold if on else self._client.disable_object_legal_hold
        await self._call(fn, bucket, key)

    async def ping(self) -> bool:
        try:
            await self._call(self._client.bucket_exists, self._config.recordings_bucket)
        except StorageError:
            return False
        return True

    # --- listings, versions and object lock (retention) -------------------------------------------------------

    async def object_lock_enabled(self, bucket: str) -> bool:
        """True if `bucket` was made with object lock (so legal holds and versioned deletes apply)."""

        def read() -> bool:
            try:
                self._client.get_object_lock_config(bucket)
            except S3Error as exc:
                if exc.code == "ObjectLockConfigurationNotFoundError":
                    return False
                raise
            return True

        return await self._call(read)

    async def versioning_enabled(self, bucket: str) -> bool:
        """True if `bucket` keeps versions (a plain delete then only adds a delete marker)."""
        config = await self._call(self._client.get_bucket_versioning, bucket)
        return config.status == "Enabled"

    async def list_page(
        self, bucket: str, prefix: str = "", *, start_after: str = "", limit: int = 1000
    ) -> list[ListedObject]:
        """Up to `limit` objects under `prefix` whose keys sort after `start_after`, in key order."""

        def listing() -> list[ListedObject]:
            out: list[ListedObject] = []
            found = self._client.list_objects(bucket, prefix=prefix, recursive=True, start_after=start_after or None)
            for o in found:
                out.append(_listed(o))
                if len(out) >= limit:
                    break
            return out

        return await self._call(listing)

    async def list_level(self, bucket: str, prefix: str = "") -> tuple[list[str], list[ListedObject]]:
        """One level under `prefix`: its "folders" (keys up to the next `/`, ending with it) and its objects."""

        def listing() -> tuple[list[str], list[ListedObject]]:
            folders: list[str] = []
            objects: list[ListedObject] = []
            for o in self._client.list_objects(bucket, prefix=prefix, recursive=False):
                if not o.object_name:
                    continue
                if o.is_dir:
                    folders.append(o.object_name)
                else:
                    objects.append(_listed(o))
            return folders, objects

        return await self._call(listing)

    async def list_versions(self, bucket: str, prefix: str) -> list[ListedObject]:
        """Every version and delete marker of every object under `prefix`."""

        def listing() -> list[ListedObject]:
            found = self._client.list_objects(bucket, prefix=prefix, recursive=True, include_version=True)
            return [_listed(o) for o in found]

        return await self._call(listing)

    async def delete_versions(self, bucket: str, items: Iterable[tuple[str, str | None]]) -> list[str]:
        """Multi-object delete of given versions ((key, version id); None: the current one); returns the keys the
        store refused (a version under legal hold or retention), with the reason logged."""
        objects = [DeleteObject(key, version) for key, version in items]

        def delete() -> list[str]:
            failed: list[str] = []
            for error in self._client.remove_objects(bucket, objects):
                log.warning("delete refused %s/%s: %s", bucket, error.name, error.message)
                failed.append(error.name or "")
            return failed

        return await self._call(delete)

    async def legal_hold_enabled(self, bucket: str, key: str) -> bool:
        return await self._call(self._client.is_object_legal_hold_enabled, bucket, key)

    async def close(self) -> None:
        """Finish calls in flight, then release threads and sockets; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._inflight:
            await asyncio.wait(list(self._inflight))
        self._pool.shutdown(wait=True)  # nothing is running any more, so this does not block
        self._http.clear()
