"""Getting stored segments to players: presigned URLs, or streamed through with HTTP range requests.

`Presigner` signs S3 GET URLs (SigV4) without a network call, for the endpoint clients reach.
`SegmentSource` reads objects from the recordings bucket in bounded chunks (never a whole object in memory when
streaming), keeps init segments (small, immutable: keyed by a hash of their configuration) in an LRU, and turns a
missing object into `SegmentMissing`. `Faults` reports footage the index lists but storage lacks: an error log, a
metric and a `ServiceEvent` on the bus, once per object per minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter

from argus_api.playback import fmp4
from argus_api.playback.index import iso
from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.errors import ArgusError
from argus_core.storage import ObjectNotFound, ObjectStore, S3Config, StorageError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class SegmentMissing(ArgusError):
    """The index lists an object that the object store does not have."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} is in the index but not in the object store")
        self.key = key


class StorageFailed(ArgusError):
    """The object store failed or could not be reached."""


class Unsatisfiable(ArgusError):
    """A Range header that selects nothing of the object."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a `Range` header asks for, None for the whole object (no header, or several ranges, which
    a server may answer in full); `Unsatisfiable` if it selects nothing."""
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - n), size)
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise Unsatisfiable(header)
    return ByteRange(start, end)


class Presigner:
    """Presigned GET URLs (AWS Signature Version 4, query string, path style) for the recordings bucket, as clients
    reach the store.

    The same URLs minio's `presigned_get_object` makes, about five times faster: the signing key (four HMACs) is
    derived once a day and shared by every URL of a playlist, which leaves one SHA-256 and one HMAC per URL (about
    6 us; an hour's playlist is 600 URLs). Pure computation, no request to the store.
    """

    def __init__(self, s3: S3Config, *, endpoint: str = "", secure: bool | None = None) -> None:
        self._bucket = s3.recordings_bucket
        self._host = endpoint or s3.endpoint
        self._scheme = "https" if (s3.secure if secure is None else secure) else "http"
        self._access_key = s3.access_key
        self._secret = s3.secret_key.encode()
        self._region = s3.region
        self._keys: dict[str, bytes] = {}  # signing key by date

    def _signing_key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = b"AWS4" + self._secret
            for part in (day, self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {day: key}
        return key

    def sign(self, keys: Sequence[str], expires_s: float, *, now: datetime | None = None) -> list[str]:
        """One URL per key, valid for `expires_s` (at most 7 days) from `now`."""
        when = now or datetime.now(UTC)
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential={quote(f'{self._access_key}/{scope}', safe='')}"
            f"&X-Amz-Date={stamp}"
            f"&X-Amz-Expires={min(int(expires_s), 604_800)}"
            "&X-Amz-SignedHeaders=host"
        )
        tail = f"\n{query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        head = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
        signing_key = self._signing_key(day)
        base = f"{self._scheme}://{self._host}"
        out = []
        for key in keys:
            path = f"/{self._bucket}/{quote(key, safe='/')}"
            canonical = hashlib.sha256(f"GET\n{path}{tail}".encode()).hexdigest()
            signature = hmac.new(signing_key, (head + canonical).encode(), hashlib.sha256).hexdigest()
            out.append(f"{base}{path}?{query}&X-Amz-Signature={signature}")
        return out

    def close(self) -> None:
        self._keys.clear()


@dataclass(frozen=True, slots=True)
class Init:
    data: bytes
    timescale: int


class SegmentSource:
    """Reads of the recordings bucket for playback."""

    def __init__(self, store: ObjectStore, *, init_cache: int = 512) -> None:
        self._store = store
        self.bucket = store.config.recordings_bucket
        self._inits: OrderedDict[str, Init] = OrderedDict()
        self._init_cache = init_cache

    async def read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        try:
            data, _ = await self._store.get(self.bucket, key, offset=offset, length=length)
        except ObjectNotFound as exc:
            raise SegmentMissing(key) from exc
        except StorageError as exc:
            raise StorageFailed(f"reading {key}: {exc}") from exc
        return data

    async def exists(self, key: str) -> bool:
        try:
            await self._store.stat(self.bucket, key)
        except ObjectNotFound:
            return False
        except StorageError as exc:
            raise StorageFailed(f"looking up {key}: {exc}") from exc
        return True

    async def missing(self, keys: Sequence[str]) -> list[str]:
        """Those of `keys` the store does not have. Lists the folder two levels above each key (an hour of
        segments in the recorder's layout: one request for up to 1,000 keys) rather than asking for each object."""
        folders: dict[str, list[str]] = {}
        for key in keys:
            parts = key.rsplit("/", 2)
            folders.setdefault(parts[0] + "/" if len(parts) == 3 else "", []).append(key)
        found: set[str] = set()
        slots = asyncio.Semaphore(4)

        async def listing(prefix: str) -> None:
            async with slots:
                try:
                    found.update(await self._store.list_keys(self.bucket, prefix))
                except StorageError as exc:
                    raise StorageFailed(f"listing {prefix}: {exc}") from exc

        try:
            async with asyncio.TaskGroup() as tasks:
                for prefix in folders:
                    tasks.create_task(listing(prefix))
        except* StorageFailed as group:
            raise group.exceptions[0] from None
        return [key for key in keys if key not in found]

    async def init(self, key: str) -> Init:
        cached = self._inits.get(key)
        if cached is not None:
            self._inits.move_to_end(key)
            return cached
        data = await self.read(key)
        try:
            init = Init(data, fmp4.timescale(data))
        except fmp4.BoxError as exc:
            raise StorageFailed(f"init segment {key} is unreadable: {exc}") from exc
        self._inits[key] = init
        while len(self._inits) > self._init_cache:
            self._inits.popitem(last=False)
        return init

    async def chunks(self, key: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes `[start, end)` of an object, in chunks of at most `CHUNK`."""
        pos = start
        while pos < end:
            n = min(CHUNK, end - pos)
            data = await self.read(key, pos, n)
            if not data:
                raise StorageFailed(f"{key} is shorter than the index says ({pos} of {end} bytes)")
            yield data
            pos += len(data)


class Faults:
    """Footage the index lists but the store lacks: said loudly, and once a minute per object at most on the bus."""

    def __init__(self, *, service: str, pod: str, bus: Bus | None, registry: CollectorRegistry) -> None:
        self._service = service
        self._pod = pod
        self._bus = bus
        self._reported: OrderedDict[str, float] = OrderedDict()
        self.missing = Counter(
            "argus_playback_segment_missing",
            "Objects the recording index lists that the object store does not have, per request that met one",
            ["camera"],
            registry=registry,
        )
        self.events = 0

    async def segment_missing(self, camera: str, key: str, start_ms: int | None) -> None:
        self.missing.labels(camera).inc()
        log.error(
            "footage missing from storage: %s (camera %s, %s) is indexed but not stored",
            key,
            camera,
            iso(start_ms) if start_ms is not None else "start unknown",
            extra={"camera": camera, "object_key": key, "fault": "segment_missing"},
        )
        now = time.monotonic()
        last = self._reported.get(key)
        if last is not None and now - last < 60.0:
            return
        self._reported[key] = now
        while len(self._reported) > 1000:
            self._reported.popitem(last=False)
        if self._bus is None:
            return
        event = m.ServiceEvent(
            service=self._service,
            pod=self._pod,
            kind="segment_missing",
            level="error",
            message=f"recorded footage of {camera} is indexed but missing from the object store: {key}",
            at_ns=time.time_ns(),
            camera=camera,
            details={"object_key": key, "start": iso(start_ms) if start_ms is not None else ""},
        )
        try:
            await self._bus.persist(
                s.SERVICE_EVENT, event, ack_timeout_s=2.0, service=self._service, kind="segment_missing"
            )
            self.events += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the log line and metric above already carry the fault
            log.warning("could not publish the segment_missing event: %s", exc)
