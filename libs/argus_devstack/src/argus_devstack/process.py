"""The life cycle shared by every server that runs as a child process: spawn, wait until it answers, stop, kill.

A server runs in its own process group (its own session, so a Ctrl-C in the terminal does not reach it: the
owner stops it in order). ``stop()`` sends the graceful signal to the server and SIGKILL to the whole process tree
when it has not exited after the timeout; ``kill()`` sends SIGKILL to the tree at once, as a crash would.
Every live group is also recorded in a process-wide registry that an ``atexit`` hook (and the pytest plugin's
SIGTERM handler) empties with SIGKILL, so no server outlives the process that started it.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from argus_devstack.errors import MissingBinaryError, PortInUseError, ServerStartError, ServerStateError
from argus_devstack.ports import PortReservation, port_is_free, release_all_reservations, reserve_port

__all__ = [
    "Launch",
    "ServerProcess",
    "emergency_cleanup",
    "find_binary",
    "kill_tree",
    "read_log_tail",
]

_log = logging.getLogger(__name__)

_PORT_IN_USE_MARKERS: Final = (
    "address already in use",
    "already in use",
    "in use by another program",
    "port is already in use",
)
_START_ATTEMPTS: Final = 5


def find_binary(name: str, *, package: str, extra_dirs: Sequence[str] = ()) -> Path:
    """The path of ``name`` on PATH or in one of ``extra_dirs``; :class:`MissingBinaryError` naming the package."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    searched = "PATH" + "".join(f", {d}" for d in extra_dirs)
    raise MissingBinaryError(name, package, f"searched {searched}")


def read_log_tail(path: Path, *, start: int = 0, max_bytes: int = 8192, max_lines: int = 40) -> str:
    """The last lines of a log file written after byte offset ``start``."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            begin = max(start, size - max_bytes)
            handle.seek(begin)
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc), parents before children."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat_line.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(root: int) -> None:
    """SIGKILL ``root``, its process group and every descendant, even those in sessions of their own.

    PostgreSQL's backends call setsid(), so a SIGKILL to the postmaster's group leaves them running; the root is
    stopped first so that it cannot fork while its descendants are listed.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(root, signal.SIGSTOP)
    victims = [root, *_descendants(root)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --- process-wide registry of live process groups, emptied at exit -------------------------------------------

_registry_lock = threading.Lock()
_live_groups: dict[int, str] = {}
_temp_dirs: set[Path] = set()
_atexit_registered = False


def _register_group(pgid: int, name: str) -> None:
    global _atexit_registered
    with _registry_lock:
        _live_groups[pgid] = name
        if not _atexit_registered:
            atexit.register(emergency_cleanup)
            _atexit_registered = True


def _unregister_group(pgid: int) -> None:
    with _registry_lock:
        _live_groups.pop(pgid, None)


def _register_temp_dir(path: Path) -> None:
    with _registry_lock:
        _temp_dirs.add(path)


def _unregister_temp_dir(path: Path) -> None:
    with _registry_lock:
        _temp_dirs.discard(path)


def emergency_cleanup() -> None:
    """SIGKILL every server still running in this process, remove their temporary folders, release ports.

    The last resort behind ``close()``: registered with ``atexit`` and called by the pytest plugin on SIGTERM.
    Safe to call from a signal handler's Python code and more than once.
    """
    with _registry_lock:
        groups = list(_live_groups.items())
        _live_groups.clear()
        dirs = list(_temp_dirs)
        _temp_dirs.clear()
    for pgid, _name in groups:
        kill_tree(pgid)
    for pgid, _name in groups:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pgid, 0)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    release_all_reservations()


# --- one server -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Launch:
    """How to run a server: argv, environment, and optionally the account to run it as (root only)."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    user: int | None = None
    group: int | None = None
    cwd: Path | None = None


class ServerProcess(abc.ABC):
    """A server run as a child process on loopback.

    Subclasses say how to prepare the data folder once, how to launch, and how to tell that the server answers.
    Ports are reserved at the first start and kept until ``close()``, so a stopped server comes back on the same
    ports (and with the same data folder) when started again.

    ``data_dir=None`` means a temporary folder, created at the first ``start()`` and removed by ``close()``;
    a given ``data_dir`` is persistent: it is created if missing and never removed.
    """

    #: a short name for logs and errors, e.g. "nats-server"
    name: str = "server"
    #: the signal that asks the server to shut down cleanly
    graceful_signal: signal.Signals = signal.SIGTERM
    #: how many ports the server needs (the first is its main port)
    port_count: int = 1

    def __init__(
        self,
        *,
        data_dir: Path | None,
        port: int | None,
        host: str = "127.0.0.1",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._persistent = data_dir is not None
        self._data_dir: Path | None = data_dir.resolve() if data_dir is not None else None
        self._requested_port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._reservations: list[PortReservation] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._log_offset = 0
        self._lock = threading.RLock()

    # --- what subclasses provide ---------------------------------------------------------------------------

    def _make_data_dir(self) -> Path:
        """Create the temporary data folder (subclasses may choose where)."""
        return Path(tempfile.mkdtemp(prefix=f"argus-{self.name}-"))

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Prepare the data folder once ports are known, before the first launch (must be idempotent)."""

    @abc.abstractmethod
    def _launch(self) -> Launch:
        """How to start the server process."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """Whether the server answers its clients now (a quick probe, no exceptions)."""

    # --- public state ---------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The main port (known once started; fixed for the life of this object)."""
        return self._port_at(0)

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise ServerStateError(f"{self.name}: no data folder before the first start()")
        return self._data_dir

    @property
    def persistent(self) -> bool:
        return self._persistent

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def log_tail(self, max_lines: int = 40) -> str:
        """The last lines the server wrote since it was last started."""
        if self._data_dir is None:
            return ""
        return read_log_tail(self.log_path, start=self._log_offset, max_lines=max_lines)

    def _port_at(self, index: int) -> int:
        if len(self._reservations) <= index:
            raise ServerStateError(f"{self.name}: ports are known only after the first start()")
        return self._reservations[index].port

    # --- life cycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and return once it answers. Does nothing if it is running."""
        with self._lock:
            if self._closed:
                raise ServerStateError(f"{self.name}: start() after close()")
            if self.running:
                return
            if self._proc is not None:
                self._reap()
            if self._data_dir is None:
                self._data_dir = self._make_data_dir()
                _register_temp_dir(self._data_dir)
            else:
                self._data_dir.mkdir(parents=True, exist_ok=True)
            if self._reservations:
                self._spawn_and_wait()
                return
            # A conflict on a random port is retried with new ports; one on the requested port is final.
            attempts = _START_ATTEMPTS
            for attempt in range(1, attempts + 1):
                self._reserve_ports()
                try:
                    self._prepare()
                    self._spawn_and_wait()
                except PortInUseError:
                    self._release_ports()
                    requested = self._requested_port
                    if attempt == attempts or (requested is not None and not port_is_free(requested, self._host)):
                        raise
                    _log.info("%s: port taken while starting, retrying with other ports", self.name)
                    continue
                except BaseException:
                    self._release_ports()
                    raise
                return

    def stop(self, timeout: float | None = None) -> None:
        """Ask the server to shut down; SIGKILL its process tree if it is still there after ``timeout``."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, self.graceful_signal)
                limit = self._stop_timeout if timeout is None else timeout
                if not self._wait_exit_unreaped(proc.pid, limit):
                    _log.warning(
                        "%s (pid %d) ignored %s for %.1f s: killing it",
                        self.name,
                        proc.pid,
                        self.graceful_signal.name,
                        limit,
                    )
            self._reap()

    def kill(self) -> None:
        """SIGKILL the server and all its processes, as a crash would, and wait for it."""
        with self._lock:
            if self._proc is None:
                return
            self._reap()

    def restart(self, timeout: float | None = None) -> None:
        """``stop()`` then ``start()``: same ports, same data."""
        self.stop(timeout)
        self.start()

    def close(self) -> None:
        """Stop the server, give its ports back and remove its temporary data. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self.stop()
            finally:
                self._closed = True
                self._release_ports()
                if not self._persistent and self._data_dir is not None:
                    shutil.rmtree(self._data_dir, ignore_errors=True)
                    _unregister_temp_dir(self._data_dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        ports = ",".join(str(r.port) for r in self._reservations) or "-"
        return f"<{type(self).__name__} {self._host}:{ports} running={self.running} data={self._data_dir}>"

    # --- internals ------------------------------------------------------------------------------------------

    def _reserve_ports(self) -> None:
        self._release_ports()
        try:
            for index in range(self.port_count):
                wanted = self._requested_port if index == 0 else None
                self._reservations.append(reserve_port(self._host, wanted))
        except BaseException:
            self._release_ports()
            raise

    def _release_ports(self) -> None:
        for reservation in self._reservations:
            reservation.release()
        self._reservations.clear()

    def _spawn_and_wait(self) -> None:
        launch = self._launch()
        log_path = self.log_path
        with log_path.open("ab") as log:
            self._log_offset = log.tell()
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            log.write(f"=== argus-devstack: starting {self.name} at {stamp}: {' '.join(launch.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(launch.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=launch.cwd or self.data_dir,
                env=dict(launch.env) if launch.env is not None else None,
                start_new_session=True,
                user=launch.user,
                group=launch.group,
                extra_groups=[] if launch.user is not None else None,
            )
        self._proc = proc
        _register_group(proc.pid, self.name)
        self._wait_until_answering(proc)

    def _wait_until_answering(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self._start_timeout
        delay = 0.002
        while True:
            code = proc.poll()
            if code is not None:
                self._reap()
                tail = self.log_tail()
                lowered = tail.lower()
                message = f"{self.name} exited with code {code} before it answered (log: {self.log_path})"
                if any(marker in lowered for marker in _PORT_IN_USE_MARKERS):
                    raise PortInUseError(message, log_tail=tail)
                raise ServerStartError(message, log_tail=tail)
            if self._answers():
                return
            if time.monotonic() >= deadline:
                self._reap()
                raise ServerStartError(
                    f"{self.name} did not answer on {self._host}:{self.port} within {self._start_timeout:.0f} s "
                    f"(log: {self.log_path})",
                    log_tail=self.log_tail(),
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    @staticmethod
    def _wait_exit_unreaped(pid: int, timeout: float) -> bool:
        """Wait for ``pid`` to exit without reaping it (its process group id stays reserved); True if it did."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            if result is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def _reap(self) -> None:
        """SIGKILL whatever is left of the server (its group and descendants) and reap the leader."""
        proc = self._proc
        if proc is None:
            return
        # Unless poll() reaped it already, the leader is alive or a zombie here, so its pid and group id cannot
        # have been reused.
        if proc.returncode is None:
            kill_tree(proc.pid)
        proc.wait()
        _unregister_group(proc.pid)
        self._proc = None
