"""Which recorder pod records which camera: leases in the `leases-recorder` KV bucket, an even spread.

Keys (the bucket's TTL, `ARGUS_LEASE_TTL_S`, expires what is not rewritten):

    pods.<pod>                  a pod's heartbeat, rewritten every TTL/3: the live pods are the keys present
    cams.<camera>.<stream>      the lease of one camera stream: JSON {"pod": ..., "since_ns": ...}

Every TTL/3 a pod rewrites its heartbeat and renews its leases with compare-and-set on the revision it holds (a
failed renewal means another pod holds it now: the pod stops recording that camera at once, without acking).
Then it reads the bucket and takes its fair share: with n cameras and p live pods (sorted by name), the first
n mod p pods get ceil(n/p) cameras and the others floor(n/p). A pod above its share hands cameras over (the
camera's worker stores its complete GOPs and acks them first, then the lease is deleted); a pod below takes free
cameras with create (atomic: only one pod wins a key). Each pod prefers the cameras that rank highest for it by
rendezvous hashing, so pods starting together mostly reach for different ones, and hands over those that rank
lowest. A dead pod's leases expire after the TTL and its cameras are taken within a TTL/3 after that.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = logging.getLogger(__name__)

POD_PREFIX = "pods."
CAMERA_PREFIX = "cams."


class LeaseValue(msgspec.Struct, frozen=True):
    pod: str
    since_ns: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The bucket as read at one moment: live pods and who holds which camera."""

    pods: frozenset[str]
    owners: dict[str, str]  # lease key -> pod


def camera_key(camera: str, stream: str) -> str:
    return f"{CAMERA_PREFIX}{camera}.{stream}"


def rank(camera: str, pod: str) -> int:
    """Rendezvous hashing: how much `pod` wants `camera` (higher first)."""
    return int.from_bytes(hashlib.blake2b(f"{camera}|{pod}".encode(), digest_size=8).digest(), "big")


def fair_share(cameras: int, pods: list[str], me: str) -> int:
    """How many of `cameras` pod `me` should hold among the live `pods` (sorted; `me` among them)."""
    ordered = sorted(set(pods) | {me})
    base, extra = divmod(cameras, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


class Leases:
    """One pod's view of and writes to the lease bucket."""

    def __init__(self, js: JetStreamContext, bucket: str, pod: str, stream: str, ttl_s: float) -> None:
        self._js = js
        self._bucket = bucket
        self.pod = pod
        self.stream = stream
        self.ttl_s = ttl_s
        self._kv: KeyValue | None = None
        self._held: dict[str, int] = {}  # camera -> revision of our lease
        self._renewed: dict[str, float] = {}  # camera -> monotonic time of the last successful write
        self._since = time.time_ns()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(LeaseValue)

    async def open(self) -> None:
        self._kv = await self._js.key_value(self._bucket)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("Leases.open() first")
        return self._kv

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def heartbeat(self) -> None:
        await self.kv.put(f"{POD_PREFIX}{self.pod}", self._encoder.encode(LeaseValue(self.pod, self._since)))

    async def leave(self) -> None:
        try:
            await self.kv.delete(f"{POD_PREFIX}{self.pod}")
        except (APIError, KeyNotFoundError):
            pass

    async def snapshot(self) -> Snapshot:
        """Every live key of the bucket, read with a short-lived watcher (expired keys are gone server-side)."""
        pods: set[str] = set()
        owners: dict[str, str] = {}
        # The watcher's consumer goes away soon after it is stopped (the client only unsubscribes).
        watcher = await self.kv.watchall(inactive_threshold=max(2.0, self.ttl_s / 2))
        try:
            while True:
                entry = await watcher.updates(timeout=max(1.0, self.ttl_s / 2))  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                key = entry.key
                deleted = entry.operation in (KV_DEL, KV_PURGE)
                if key.startswith(POD_PREFIX):
                    (pods.discard if deleted else pods.add)(key[len(POD_PREFIX) :])
                elif key.startswith(CAMERA_PREFIX):
                    if deleted:
                        owners.pop(key, None)
                    else:
                        try:
                            owners[key] = self._decoder.decode(entry.value or b"").pod
                        except msgspec.DecodeError:
                            owners[key] = "?"
                if entry.delta == 0:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        pods.add(self.pod)
        return Snapshot(frozenset(pods), owners)

    async def acquire(self, camera: str) -> bool:
        """Take a free camera; False if another pod holds it."""
        value = self._encoder.encode(LeaseValue(self.pod, time.time_ns()))
        try:
            revision = await self.kv.create(camera_key(camera, self.stream), value)
        except KeyWrongLastSequenceError:
            return False
        self._held[camera] = revision
        self._renewed[camera] = time.monotonic()
        return True

    async def renew(self, camera: str) -> bool:
        """Rewrite our lease; False if it is no longer ours (someone took it after it expired)."""
        revision = self._held.get(camera)
        if revision is None:
            return False
        value = self._encoder.encode(LeaseValue(self.pod, time.time_ns()))
        key = camera_key(camera, self.stream)
        try:
            self._held[camera] = await self.kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError:
            # A renewal whose ack came late or never may have landed: the key then names this pod at a revision
            # we did not see, and only the holder writes a held lease. Anything else (another pod, gone) is lost.
            renewed = await self._renew_unseen(key, value)
            if renewed is None:
                self.forget(camera)
                return False
            self._held[camera] = renewed
        self._renewed[camera] = time.monotonic()
        return True

    async def _renew_unseen(self, key: str, value: bytes) -> int | None:
        """Rewrite `key` on its current revision if the value there names this pod; None if it does not."""
        try:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError as exc:
                if exc.op is not None:  # a delete marker: released, not ours any more
                    return None
                # No message at all: the bucket's TTL removed it while our renewals were late. Nobody has taken it
                # if `create` succeeds.
                revision = await self.kv.create(key, value)
                log.warning("the lease on %s had expired in the bus; took it again", key)
                return revision
            if entry.value is None or self._decoder.decode(entry.value).pod != self.pod:
                return None
            revision = await self.kv.update(key, value, last=entry.revision or 0)
        except (KeyNotFoundError, KeyWrongLastSequenceError, msgspec.DecodeError):
            return None
        log.info("the lease on %s had a write of ours we had not seen acked", key)
        return revision

    def expired(self, camera: str) -> bool:
        """Whether our lease may have run out (no successful renewal for most of a TTL)."""
        renewed = self._renewed.get(camera)
        return renewed is None or time.monotonic() - renewed > self.ttl_s * 0.8

    async def release(self, camera: str) -> None:
        revision = self._held.pop(camera, None)
        self._renewed.pop(camera, None)
        if revision is None:
            return
        try:
            await self.kv.delete(camera_key(camera, self.stream), last=revision)
        except (APIError, KeyWrongLastSequenceError, KeyNotFoundError):
            pass  # it already expired or moved on: nothing of ours to delete

    def forget(self, camera: str) -> None:
        self._held.pop(camera, None)
        self._renewed.pop(camera, None)
