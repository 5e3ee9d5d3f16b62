"""Who controls which PTZ camera, and which pod runs its tour or park: leases in the `leases-ptz` KV bucket.

Two kinds of key live in the bucket:

- `ctl.<camera>`: the control lease (`ControlLease`): the holder (a user's subject, `tour:<name>` or `park`), their
  priority, when they last commanded and until when they hold control (`last_ns` + the idle time), and the end of
  a running continuous move. Every write is a compare-and-set on the key's revision, so of two pods deciding at
  the same instant exactly one wins and the other re-reads and decides again.
- `auto.<camera>`: which pod runs the camera's tour or park (`AutoLease`), created only if absent and renewed by
  compare-and-set; `pod == ""` marks one handed back by a pod that stopped cleanly.

The bucket's TTL (`ARGUS_LEASE_TTL_S`) removes a key nobody rewrites. A control lease's idle time may be longer,
so the pod that last wrote a lease rewrites it every third of the TTL (`Keeper`), and any pod takes that over when
the lease goes unrefreshed for half the TTL (its pod died). Each pod mirrors the bucket with a KV watch: decisions
start from the mirror (no round trip) and the compare-and-set catches a stale one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from argus_core.identity import ROLE_PRIORITY
from argus_ptz.errors import Busy, Unavailable

log = logging.getLogger(__name__)

CONTROL = "ctl."
AUTO = "auto."
_WRONG_LAST_SEQUENCE = (10071, 10164)
_CLAIM_ATTEMPTS = 8


class ControlLease(msgspec.Struct, frozen=True, kw_only=True):
    holder: str
    priority: int
    role: str = ""
    client: str = ""
    since_ns: int  # when this holder took control
    last_ns: int  # their last command
    until_ns: int  # control is released when this passes
    pod: str  # the pod that wrote it last, which keeps it alive
    written_ns: int
    moving_until_ns: int = 0  # a continuous move runs until then unless a command renews it; 0: none

    def active(self, now_ns: int) -> bool:
        return now_ns < self.until_ns


class AutoLease(msgspec.Struct, frozen=True, kw_only=True):
    pod: str  # "" when handed back
    written_ns: int
    tour: str = ""
    step: int = 0


@dataclass(frozen=True)
class Claimant:
    holder: str
    priority: int
    role: str = ""
    client: str = ""


@dataclass(frozen=True)
class Claim:
    granted: bool
    lease: ControlLease  # ours when granted, the holder's when refused
    revision: int
    preempted: ControlLease | None = None


def top_role(roles: tuple[str, ...]) -> str:
    return max(roles, key=lambda r: ROLE_PRIORITY.get(r, 0), default="")


class _Conflict(Exception):
    """The key's revision moved under us."""


_ENCODER = msgspec.json.Encoder()
_CONTROL_DECODER = msgspec.json.Decoder(ControlLease)
_AUTO_DECODER = msgspec.json.Decoder(AutoLease)


@dataclass
class _Known:
    revision: int
    value: bytes | None  # None: deleted


class Leases:
    """The bucket, with a local mirror kept by a KV watch (`run()`), and the compare-and-set operations."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        pod: str,
        idle_s: float,
        ttl_s: float,
        on_idle_release: Callable[[str, ControlLease], Awaitable[None]] | None = None,
    ) -> None:
        self.kv = kv
        self._on_idle_release = on_idle_release
        self.pod = pod
        self.idle_ns = int(idle_s * 1e9)
        self.ttl_ns = int(ttl_s * 1e9)
        self._known: dict[str, _Known] = {}
        self._ready = asyncio.Event()

    # --- mirror ----------------------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Mirror the bucket until `stopping` is set."""
        watcher = await self.kv.watchall()
        try:
            while not stopping.is_set():
                try:
                    entry = await watcher.updates(timeout=0.5)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    continue
                if entry is None:
                    self._ready.set()
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                self._learn(entry.key, int(entry.revision or 0), None if deleted else entry.value)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def _learn(self, key: str, revision: int, value: bytes | None) -> None:
        known = self._known.get(key)
        if known is not None and known.revision >= revision:
            return
        self._known[key] = _Known(revision, value)

    def _forget(self, key: str, revision: int) -> None:
        known = self._known.get(key)
        if known is not None and known.revision <= revision:
            del self._known[key]

    def control(self, camera: str) -> tuple[int, ControlLease] | None:
        """The mirrored control lease of `camera` (perhaps lapsed: check `active`)."""
        known = self._known.get(CONTROL + camera)
        if known is None or known.value is None:
            return None
        lease = _decode_control(known.value)
        return None if lease is None else (known.revision, lease)

    def controls(self) -> Iterator[tuple[str, int, ControlLease]]:
        for key, known in list(self._known.items()):
            if key.startswith(CONTROL) and known.value is not None:
                lease = _decode_control(known.value)
                if lease is not None:
                    yield key[len(CONTROL) :], known.revision, lease

    def auto(self, camera: str) -> tuple[int, AutoLease] | None:
        known = self._known.get(AUTO + camera)
        if known is None or known.value is None:
            return None
        try:
            return known.revision, _AUTO_DECODER.decode(known.value)
        except msgspec.DecodeError:
            return None

    def auto_free(self, camera: str, now_ns: int | None = None) -> bool:
        """Whether no live pod runs `camera`'s automation, as far as the mirror knows."""
        now = time.time_ns() if now_ns is None else now_ns
        found = self.auto(camera)
        return found is None or found[1].pod == "" or now - found[1].written_ns > self.ttl_ns

    # --- store -----------------------------------------------------------------------------------------------

    async def _read(self, key: str) -> tuple[int, bytes | None]:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return 0, None
        except nats.errors.Error as exc:
            raise Unavailable(f"the lease store did not answer: {exc!r}") from exc
        revision = int(entry.revision or 0)
        self._learn(key, revision, entry.value)
        return revision, entry.value

    async def _write(self, key: str, value: bytes, revision: int) -> int:
        """Compare-and-set: create when `revision` is 0, else update if the key is still at `revision`."""
        try:
            if revision == 0:
                new = await self.kv.create(key, value)
            else:
                new = await self.kv.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise _Conflict from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise _Conflict from exc
            raise Unavailable(f"the lease store refused a write: {exc.description}") from exc
        except nats.errors.Error as exc:
            raise Unavailable(f"the lease store did not answer: {exc!r}") from exc
        self._learn(key, int(new), value)
        return int(new)

    async def _delete(self, key: str, revision: int) -> bool:
        try:
            await self.kv.delete(key, last=revision)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                # Moved on, or already aged out of the bucket: either way not ours to delete; forget the copy
                # if it is the one we tried.
                self._forget(key, revision)
                return False
            raise Unavailable(f"the lease store refused a delete: {exc.description}") from exc
        except nats.errors.Error as exc:
            raise Unavailable(f"the lease store did not answer: {exc!r}") from exc
        self._forget(key, revision)
        return True

    # --- control -----------------------------------------------------------------------------------------------

    async def claim(self, camera: str, who: Claimant, *, moving_until_ns: int | None = 0) -> Claim:
        """Take or renew control of `camera` for `who`, or learn who holds it.

        Free, lapsed, held by `who` already, or held at a lower priority: granted (the last one preempts). Held by
        someone else at the same or a higher priority: refused with their lease. `moving_until_ns` is when the
        continuous move this command starts must be renewed by (0: the command ends any motion; None: it does not
        touch the motion, which keeps the deadline it had).
        """
        key = CONTROL + camera
        from_mirror = True
        for _ in range(_CLAIM_ATTEMPTS):
            known = self._known.get(key)
            if from_mirror and known is not None:
                revision, raw = known.revision, known.value
            else:
                revision, raw = await self._read(key)
            current = None if raw is None else _decode_control(raw)
            now = time.time_ns()
            held = current is not None and current.active(now)
            ours = held and current is not None and current.holder == who.holder
            if held and not ours and current is not None and who.priority <= current.priority:
                if from_mirror:
                    from_mirror = False  # confirm with the store before refusing
                    continue
                return Claim(False, current, revision)
            lease = ControlLease(
                holder=who.holder,
                priority=who.priority,
                role=who.role,
                client=who.client,
                since_ns=current.since_ns if ours and current is not None else now,
                last_ns=now,
                until_ns=now + self.idle_ns,
                pod=self.pod,
                written_ns=now,
                moving_until_ns=(
                    moving_until_ns
                    if moving_until_ns is not None
                    else (current.moving_until_ns if current is not None else 0)
                ),
            )
            try:
                new_revision = await self._write(key, _ENCODER.encode(lease), revision)
            except _Conflict:
                from_mirror = False
                continue
            if current is not None and not held:
                await self.idle_released(camera, current)
            preempted = current if held and not ours else None
            return Claim(True, lease, new_revision, preempted)
        raise Busy(f"control of camera {camera} is being contended; try again")

    async def current(self, camera: str) -> ControlLease | None:
        """The control lease of `camera` as the store has it now (not the mirror)."""
        _, raw = await self._read(CONTROL + camera)
        return None if raw is None else _decode_control(raw)

    async def replace(self, camera: str, revision: int, lease: ControlLease) -> int | None:
        """Write `lease` if the key is still at `revision`; the new revision, or None if it moved."""
        try:
            return await self._write(CONTROL + camera, _ENCODER.encode(lease), revision)
        except _Conflict:
            return None

    async def expire(self, camera: str, revision: int, lease: ControlLease) -> bool:
        """Delete a control lease whose idle time passed, if it is still at `revision`."""
        if not await self._delete(CONTROL + camera, revision):
            return False
        await self.idle_released(camera, lease)
        return True

    async def idle_released(self, camera: str, lease: ControlLease) -> None:
        """A holder's control ended by idle time: exactly once, by whoever deleted or replaced their lease."""
        log.info("camera %s: control by %s released after idle", camera, lease.holder, extra={"camera": camera})
        if self._on_idle_release is not None:
            await self._on_idle_release(camera, lease)

    async def release(self, camera: str, holder: str) -> ControlLease | None:
        """Give up control if `holder` has it; the released lease, or None if they did not hold it."""
        key = CONTROL + camera
        for _ in range(_CLAIM_ATTEMPTS):
            revision, raw = await self._read(key)
            current = None if raw is None else _decode_control(raw)
            if current is None or current.holder != holder or not current.active(time.time_ns()):
                return None
            if await self._delete(key, revision):
                return current
        raise Busy(f"control of camera {camera} is being contended; try again")

    # --- automation ------------------------------------------------------------------------------------------

    async def claim_auto(self, camera: str, tour: str = "", step: int = 0) -> tuple[int, AutoLease] | None:
        """Become the pod that runs `camera`'s automation, if no live pod does; keeps a handed-back tour's step."""
        key = AUTO + camera
        revision, raw = await self._read(key)
        now = time.time_ns()
        previous = None
        if raw is not None:
            try:
                previous = _AUTO_DECODER.decode(raw)
            except msgspec.DecodeError:
                previous = None
            if previous is not None and previous.pod and now - previous.written_ns <= self.ttl_ns:
                return None
        if previous is not None and previous.tour == tour:
            step = previous.step
        lease = AutoLease(pod=self.pod, written_ns=now, tour=tour, step=step)
        try:
            new_revision = await self._write(key, _ENCODER.encode(lease), revision)
        except _Conflict:
            return None
        return new_revision, lease

    async def renew_auto(self, camera: str, revision: int, tour: str, step: int) -> tuple[int, AutoLease] | None:
        lease = AutoLease(pod=self.pod, written_ns=time.time_ns(), tour=tour, step=step)
        try:
            return await self._write(AUTO + camera, _ENCODER.encode(lease), revision), lease
        except _Conflict:
            return None

    async def hand_back_auto(self, camera: str, revision: int, tour: str, step: int) -> None:
        """Let another pod take `camera`'s automation at once, where this one left it."""
        lease = AutoLease(pod="", written_ns=time.time_ns(), tour=tour, step=step)
        with contextlib.suppress(_Conflict):
            await self._write(AUTO + camera, _ENCODER.encode(lease), revision)


def _decode_control(raw: bytes) -> ControlLease | None:
    try:
        return _CONTROL_DECODER.decode(raw)
    except msgspec.DecodeError:
        log.warning("a control lease in the bucket does not decode; treating it as free")
        return None
