"""Free TCP ports on loopback, and reservations that keep parallel workers from sharing one.

Two things can go wrong when many test processes (pytest-xdist workers) start servers at once:

* a port that was free when it was picked is bound by someone else before the server binds it: the server
  exits with "address already in use". :func:`retry_on_port_conflict` picks a new port and tries again.
* a server that is stopped for an outage test (30 s) leaves its port unbound, and another server picks it.
  A :class:`PortReservation` is an advisory ``flock`` on a small file named after the port, held for as long as
  the server object lives (not only while it runs); every devstack server of every process of this user
  checks it before using a port.

Ports are picked below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``), so the kernel never hands
one of them to a socket bound to port 0 or to an outgoing connection while its server is stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import logging
import os
import random
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from argus_devstack.errors import PortInUseError

__all__ = [
    "PortReservation",
    "free_port",
    "port_is_free",
    "release_all_reservations",
    "reserve_port",
    "retry_on_port_conflict",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_LOWEST_PORT: Final = 20000
_FALLBACK_RANGE: Final = (20000, 32767)
_PICK_ATTEMPTS: Final = 200


def _candidate_range() -> tuple[int, int]:
    """Ports from 20000 up to just below the ephemeral range (inclusive bounds)."""
    try:
        low_text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        ephemeral_low = int(low_text)
    except (OSError, ValueError, IndexError):
        return _FALLBACK_RANGE
    if ephemeral_low - 1 - _LOWEST_PORT < 1000:
        # A machine whose ephemeral range starts low: use the ports above it instead.
        return (max(ephemeral_low, 1024), 65000)
    return (_LOWEST_PORT, ephemeral_low - 1)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP listener could bind ``host:port`` right now (a bind test, no reservation)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Reservations still held, released at exit so that their lock files do not pile up (a process killed with
# SIGKILL leaves its files behind; they are harmless: an unheld file is free to lock).
_held_lock = threading.Lock()
_held: set[PortReservation] = set()
_atexit_registered = False


def _track(reservation: PortReservation) -> None:
    global _atexit_registered
    with _held_lock:
        _held.add(reservation)
        if not _atexit_registered:
            atexit.register(release_all_reservations)
            _atexit_registered = True


def _untrack(reservation: PortReservation) -> None:
    with _held_lock:
        _held.discard(reservation)


def release_all_reservations() -> None:
    """Release every reservation this process holds (at exit, or when it is being killed)."""
    with _held_lock:
        held = list(_held)
    for reservation in held:
        reservation.release()


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"argus-devstack-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _try_lock(path: Path) -> int | None:
    """Take an exclusive flock on ``path``; the open descriptor, or None when another holder has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        # The previous holder may have unlinked the file between our open() and flock(): then our lock is on
        # an orphan inode that nobody else will ever look at. Check and start over.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        if current.st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        return fd


class PortReservation:
    """An advisory reservation of one TCP port number, shared by all devstack users of this machine's account.

    It does not bind the port: the server does. Release it when the server object is closed for good.
    """

    def __init__(self, port: int, fd: int, path: Path) -> None:
        self._port = port
        self._fd: int | None = fd
        self._path = path
        _track(self)

    @property
    def port(self) -> int:
        return self._port

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the port back. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _untrack(self)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortReservation(port={self._port}, held={self.held})"


def reserve_port(host: str = "127.0.0.1", port: int | None = None) -> PortReservation:
    """Reserve ``port``, or a free port picked at random when None.

    A given port is reserved even when it is bound right now (a server being restarted on it by its owner is
    the caller's business); :class:`PortInUseError` when another devstack server holds it.
    """
    lock_dir = _lock_dir()
    if port is not None:
        fd = _try_lock(lock_dir / f"{port}.lock")
        if fd is None:
            raise PortInUseError(f"port {port} is reserved by another devstack server on this machine")
        return PortReservation(port, fd, lock_dir / f"{port}.lock")
    low, high = _candidate_range()
    rng = random.SystemRandom()
    for _ in range(_PICK_ATTEMPTS):
        candidate = rng.randint(low, high)
        path = lock_dir / f"{candidate}.lock"
        fd = _try_lock(path)
        if fd is None:
            continue
        if port_is_free(candidate, host):
            return PortReservation(candidate, fd, path)
        # Bound by something that is not ours: let it go and try another.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
    raise PortInUseError(f"no free TCP port found on {host} in {low}-{high} after {_PICK_ATTEMPTS} tries")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now and not reserved by a devstack server.

    Nothing holds it afterwards: bind it soon, and be ready to retry (:func:`retry_on_port_conflict`).
    """
    with reserve_port(host) as reservation:
        return reservation.port


def retry_on_port_conflict(start: Callable[[], _T], *, attempts: int = 5, what: str = "server") -> _T:
    """Call ``start`` until it does not raise :class:`PortInUseError`, at most ``attempts`` times.

    ``start`` must pick a new port on each call (for example ``lambda: Server(port=free_port())``).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except PortInUseError:
            if attempt == attempts:
                raise
            _log.info("%s: port taken while starting, retrying with another (attempt %d)", what, attempt)
    raise AssertionError("unreachable")
