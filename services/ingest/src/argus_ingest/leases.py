"""Which ingest pod pulls which camera: leases and pod heartbeats in the `leases-ingest` KV bucket.

Keys:

    pods.<pod>       a pod's heartbeat (`Member`), rewritten every renew interval; the live pods are those whose
                     key changed within the last TTL. It names the sites the pod serves: pods serving the same
                     sites share those sites' cameras among themselves (a pool) and ignore the other pools
    cams.<camera>    the lease of one camera (`Lease`): the pod that pulls it, rewritten every renew interval

Every write of a lease is a compare-and-set on the revision the writer last saw (`create` for a free key), so of
two pods reaching for one camera exactly one wins. Each pod mirrors the bucket through a KV watch and times
every key by its own monotonic clock from the moment it saw the key's revision change: a lease not rewritten for
`ttl_s` is stale (its pod died or lost the bus) and may be taken with a compare-and-set on that stale revision. No
wall clocks are compared between pods. The bucket's own TTL (`ARGUS_LEASE_TTL_S`) removes keys nobody rewrites,
which the mirror may not see: a compare-and-set on a vanished key fails, the key is read again and then created.

A pod that stops cleanly deletes its leases (a delete marker, seen at once by the others' watches) and its
heartbeat, so its cameras are taken within a tick instead of a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = logging.getLogger(__name__)

POD_PREFIX = "pods."
CAMERA_PREFIX = "cams."
_WRONG_LAST_SEQUENCE = (10071, 10164)
_KEY_UNSAFE = re.compile(r"[^-/_=.a-zA-Z0-9]")

# What a KV operation fails with when the bus is away: the lease logic treats these as "unknown, try later".
KV_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    pod: str
    since_ns: int  # when this pod took the camera (wall clock, for people)
    renewed_ns: int


class Member(msgspec.Struct, frozen=True, kw_only=True):
    pod: str
    since_ns: int
    cameras: int = 0
    sites: tuple[str, ...] = ()  # sorted; empty: every camera of the register


_ENCODER = msgspec.json.Encoder()
_LEASE = msgspec.json.Decoder(Lease)
_MEMBER = msgspec.json.Decoder(Member)


def pod_key(pod: str) -> str:
    return POD_PREFIX + _KEY_UNSAFE.sub("_", pod)


def camera_key(camera: str) -> str:
    return CAMERA_PREFIX + camera


@dataclass(slots=True)
class _Known:
    revision: int
    owner: str | None  # the pod in the value; None when deleted or unreadable
    seen: float  # monotonic time we saw this revision
    deleted: bool
    last_owner: str = ""  # for a deleted lease: who held it before
    vanished: bool = False  # deleted because it expired in the server (not released)
    sites: tuple[str, ...] = ()  # for a heartbeat: the sites that pod serves


@dataclass(frozen=True, slots=True)
class Acquired:
    revision: int
    previous_pod: str
    takeover: Literal["", "released", "expired"]


class _Conflict(Exception):
    pass


class LeaseTable:
    """One pod's mirror of the bucket and its writes. `run()` keeps the mirror; the rest is called by the pod."""

    def __init__(self, kv: KeyValue, *, pod: str, ttl_s: float, sites: Collection[str] = ()) -> None:
        self.kv = kv
        self.pod = pod
        self.ttl_s = ttl_s
        self.sites = tuple(sorted(set(sites)))
        self._since_ns = time.time_ns()
        self._known: dict[str, _Known] = {}
        self._held: dict[str, int] = {}  # camera -> revision of our lease
        self._renewed: dict[str, float] = {}  # camera -> monotonic time of our last successful write
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()  # set when another pod's lease or heartbeat appeared or went away

    # --- the mirror -----------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Mirror the bucket until `stop` is set; a broken watch is started again.

        Stopped by an event, not by cancelling: nats-py's `updates()` uses `asyncio.wait_for`, which on Python 3.11
        can swallow a cancellation that arrives together with an update.
        """
        while not stop.is_set():
            try:
                watcher = await self.kv.watchall()
            except KV_ERRORS as exc:
                log.warning("lease watch could not start: %r", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
                continue
            try:
                while not stop.is_set():
                    try:
                        entry = await watcher.updates(timeout=0.25)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None:
                        self.ready.set()
                        continue
                    deleted = entry.operation in (KV_DEL, KV_PURGE)
                    self._learn(entry.key, int(entry.revision or 0), None if deleted else entry.value)
            except KV_ERRORS as exc:
                log.warning("lease watch broke, restarting: %r", exc)
            finally:
                with contextlib.suppress(*KV_ERRORS):
                    await watcher.stop()  # type: ignore[no-untyped-call]

    def _learn(self, key: str, revision: int, value: bytes | None, *, vanished: bool = False) -> None:
        known = self._known.get(key)
        if known is not None and known.revision >= revision and not vanished:
            return
        owner = None
        sites: tuple[str, ...] = ()
        if value is not None:
            owner, sites = self._owner_of(key, value)
        last_owner = owner or (known.owner or known.last_owner if known is not None else "") or ""
        self._known[key] = _Known(revision, owner, time.monotonic(), value is None, last_owner, vanished, sites)
        if owner != self.pod and (known is None or known.owner != owner or value is None):
            self.changed.set()

    @staticmethod
    def _owner_of(key: str, value: bytes) -> tuple[str | None, tuple[str, ...]]:
        """The pod a value names, and for a heartbeat the sites it serves."""
        try:
            if key.startswith(CAMERA_PREFIX):
                return _LEASE.decode(value).pod, ()
            if key.startswith(POD_PREFIX):
                member = _MEMBER.decode(value)
                return member.pod, tuple(sorted(set(member.sites)))
        except msgspec.DecodeError:
            return "?", ()
        return None, ()

    def _fresh(self, known: _Known, now: float) -> bool:
        return not known.deleted and now - known.seen < self.ttl_s

    def live_pods(self) -> set[str]:
        """Pods of this pod's pool (serving the same sites) whose heartbeat changed within the TTL, this one
        included."""
        now = time.monotonic()
        pods = {
            known.owner
            for key, known in self._known.items()
            if key.startswith(POD_PREFIX) and known.owner and known.sites == self.sites and self._fresh(known, now)
        }
        pods.add(self.pod)
        return pods

    def live_pools(self) -> set[tuple[str, ...]]:
        """The site sets that live pods (of any pool, this one included) serve; `()` serves every camera."""
        now = time.monotonic()
        pools = {
            known.sites
            for key, known in self._known.items()
            if key.startswith(POD_PREFIX) and known.owner and self._fresh(known, now)
        }
        pools.add(self.sites)
        return pools

    def owners(self) -> dict[str, str]:
        """Camera -> the pod holding a fresh lease on it (ours included).

        A key that names this pod without this pod holding it (a write whose ack was lost, or a former life of a pod
        of the same name) counts as free: `acquire` takes it back at once instead of waiting for it to go stale."""
        now = time.monotonic()
        out = {
            key[len(CAMERA_PREFIX) :]: known.owner
            for key, known in self._known.items()
            if key.startswith(CAMERA_PREFIX) and known.owner and known.owner != self.pod and self._fresh(known, now)
        }
        out.update(dict.fromkeys(self._held, self.pod))
        return out

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    # --- writes ---------------------------------------------------------------------------------------------------

    async def heartbeat(self, cameras: int) -> None:
        value = _ENCODER.encode(Member(pod=self.pod, since_ns=self._since_ns, cameras=cameras, sites=self.sites))
        revision = await self.kv.put(pod_key(self.pod), value)
        self._learn(pod_key(self.pod), int(revision), value)

    async def leave(self) -> None:
        with contextlib.suppress(*KV_ERRORS):
            await self.kv.delete(pod_key(self.pod))

    async def acquire(self, camera: str) -> Acquired | None:
        """Take `camera` if it is free or its lease is stale; None if another pod has it (or got it first)."""
        key = camera_key(camera)
        known = self._known.get(key)
        now_ns = time.time_ns()
        value = _ENCODER.encode(Lease(pod=self.pod, since_ns=now_ns, renewed_ns=now_ns))
        if known is not None and self._fresh(known, time.monotonic()) and known.owner != self.pod:
            return None
        try:
            if known is None or known.deleted:
                revision = await self._create(key, value)
            else:
                revision = await self._update(key, value, known.revision)
        except _Conflict:
            await self._reread(key)
            return None
        previous = ""
        takeover: Literal["", "released", "expired"] = ""
        if known is not None:
            previous = known.owner or known.last_owner
            if previous == self.pod:
                previous = ""
            elif previous:
                takeover = "released" if known.deleted and not known.vanished else "expired"
        self._learn(key, revision, value)
        self._held[camera] = revision
        self._renewed[camera] = time.monotonic()
        return Acquired(revision, previous, takeover)

    async def renew(self, camera: str) -> bool | None:
        """Rewrite our lease: True; False if another pod holds it now (stop pulling at once); None if the bus did
        not answer (try again; `expired()` says when to give up)."""
        revision = self._held.get(camera)
        if revision is None:
            return False
        now_ns = time.time_ns()
        value = _ENCODER.encode(Lease(pod=self.pod, since_ns=now_ns, renewed_ns=now_ns))
        key = camera_key(camera)
        try:
            try:
                new = await self._update(key, value, revision)
            except _Conflict:
                # A write of ours whose ack came late or never (a slow bus, a busy loop) may have landed: the key
                # then names this pod at a revision we did not see. Only the holder writes a held lease, so that
                # revision is ours to renew on; a key naming another pod (or gone) is lost.
                await self._reread(key)
                known = self._known.get(key)
                if known is not None and known.deleted and known.vanished:
                    # Gone from the server without a delete marker: the bucket's TTL removed it while this pod's
                    # renewals were late (a busy loop, a slow bus). Nobody took it, or `create` fails below.
                    log.warning(
                        "the lease on %s had expired in the bus; taking it again", camera, extra={"camera": camera}
                    )
                    new = await self._create(key, value)
                elif known is None or known.deleted or known.owner != self.pod:
                    self.forget(camera)
                    return False
                else:
                    log.info(
                        "the lease on %s had a write of ours we had not seen acked", camera, extra={"camera": camera}
                    )
                    new = await self._update(key, value, known.revision)
        except _Conflict:
            self.forget(camera)
            await self._reread(key)
            return False
        except KV_ERRORS as exc:
            log.warning("renewal of the lease on %s failed: %r", camera, exc, extra={"camera": camera})
            return None
        self._held[camera] = new
        self._renewed[camera] = time.monotonic()
        self._learn(key, new, value)
        return True

    def expired(self, camera: str) -> bool:
        """Whether our lease may have run out for the others (no successful renewal for most of a TTL)."""
        renewed = self._renewed.get(camera)
        return renewed is None or time.monotonic() - renewed > self.ttl_s * 0.9

    async def release(self, camera: str) -> None:
        """Delete our lease (if it is still ours) so that another pod takes the camera at once."""
        revision = self._held.pop(camera, None)
        self._renewed.pop(camera, None)
        if revision is None:
            return
        try:
            await self.kv.delete(camera_key(camera), last=revision)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                log.warning("release of %s refused: %s", camera, exc.description, extra={"camera": camera})
        except KV_ERRORS as exc:
            log.warning("release of %s failed (it will expire): %r", camera, exc, extra={"camera": camera})

    def forget(self, camera: str) -> None:
        self._held.pop(camera, None)
        self._renewed.pop(camera, None)

    async def _create(self, key: str, value: bytes) -> int:
        try:
            return int(await self.kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise _Conflict from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise _Conflict from exc
            raise

    async def _update(self, key: str, value: bytes, revision: int) -> int:
        try:
            return int(await self.kv.update(key, value, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise _Conflict from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise _Conflict from exc
            raise

    async def _reread(self, key: str) -> None:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            # nats-py reports a delete marker as KeyNotFoundError with `op` set; no `op`: no message at all (the
            # bucket's TTL removed the key).
            known = self._known.get(key)
            revision = int(exc.entry.revision or 0) if exc.entry is not None else 0
            self._learn(key, max(revision, known.revision if known else 0), None, vanished=exc.op is None)
            return
        except KV_ERRORS:
            return
        self._learn(key, int(entry.revision or 0), entry.value)


# --- the even spread ---------------------------------------------------------------------------------------------


def rank(camera: str, pod: str) -> int:
    """Rendezvous hashing: how much `pod` wants `camera` (higher first); pods starting together reach apart."""
    return int.from_bytes(hashlib.blake2b(f"{camera}|{pod}".encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Plan:
    target: int
    take: tuple[str, ...]  # free cameras to try, best first (at most target - held)
    give: tuple[str, ...]  # ours to hand over


def plan(cameras: Iterable[str], owners: Mapping[str, str], pods: Collection[str], me: str) -> Plan:
    """This pod's part of an even spread of `cameras` over the live `pods`, moving as few cameras as possible.

    With n cameras and p pods every pod gets floor(n/p) and n mod p of them one more; the extra ones go to the
    pods that hold the most already (ties by name), so that a spread that is even stays as it is. Every pod computes
    the same targets from the same view of the bucket; compare-and-set settles the moments where views differ.
    """
    wanted = sorted(set(cameras))
    live = sorted(set(pods) | {me})
    holdings = {pod: 0 for pod in live}
    for camera in wanted:
        owner = owners.get(camera)
        if owner in holdings:
            holdings[owner] += 1
    base, extra = divmod(len(wanted), len(live))
    order = sorted(live, key=lambda pod: (-holdings[pod], pod))
    target = base + (1 if order.index(me) < extra else 0)
    mine = [c for c in wanted if owners.get(c) == me]
    give: tuple[str, ...] = ()
    take: tuple[str, ...] = ()
    if len(mine) > target:
        give = tuple(sorted(mine, key=lambda c: rank(c, me))[: len(mine) - target])
    elif len(mine) < target:
        free = [c for c in wanted if owners.get(c) is None]
        take = tuple(sorted(free, key=lambda c: rank(c, me), reverse=True)[: target - len(mine)])
    return Plan(target, take, give)
