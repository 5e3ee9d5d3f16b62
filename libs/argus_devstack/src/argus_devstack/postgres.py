"""A private PostgreSQL cluster (Debian's binaries) run as a child process on loopback.

``initdb`` and ``postgres`` refuse to run as root. When this process is root they run as the unprivileged
``postgres`` account (Debian's package creates it; failing that an ``argus-pg`` system account is created), and the
data folder is made with ``mkdtemp`` under the system temporary folder (pytest's ``tmp_path`` lives under a 0700
root folder that the account cannot enter) and handed to that account.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from argus_devstack.errors import DevstackError, MissingBinaryError, ServerStartError
from argus_devstack.probes import postgres_answers
from argus_devstack.process import Launch, ServerProcess, read_log_tail

__all__ = ["PostgresServer", "find_postgres_bindir", "validate_database_name"]

_log = logging.getLogger(__name__)

_DB_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FALLBACK_ACCOUNT: Final = "argus-pg"
_SOCKET_PATH_MAX: Final = 107
_PSQL_TIMEOUT: Final = 60.0


def find_postgres_bindir() -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/*/bin``."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidate = Path(out)
            if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
                return candidate
    versions: list[tuple[int, Path]] = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if version.isdigit() and (Path(path) / "initdb").is_file():
            versions.append((int(version), Path(path)))
    if versions:
        return max(versions)[1]
    raise MissingBinaryError(
        "initdb/postgres", "postgresql", "searched pg_config --bindir and /usr/lib/postgresql/*/bin"
    )


def validate_database_name(name: str) -> str:
    """``name`` if it is a plain lower-case identifier (so it never needs quoting rules), else ValueError."""
    if not _DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
    return name


def _server_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None when not root, else ``postgres`` (or a created ``argus-pg``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _FALLBACK_ACCOUNT):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    _log.info("creating system account %s to run PostgreSQL (it refuses to run as root)", _FALLBACK_ACCOUNT)
    try:
        subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", _FALLBACK_ACCOUNT],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise DevstackError(
            f"PostgreSQL refuses to run as root and no 'postgres' account exists; creating {_FALLBACK_ACCOUNT!r} "
            f"failed: {exc}"
        ) from exc
    return pwd.getpwnam(_FALLBACK_ACCOUNT)


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Fail clearly when ``account`` cannot traverse the folders above ``path``."""
    for parent in path.parents:
        mode = parent.stat()
        if mode.st_uid == account.pw_uid or mode.st_mode & stat.S_IXOTH:
            continue
        if mode.st_gid == account.pw_gid and mode.st_mode & stat.S_IXGRP:
            continue
        raise DevstackError(
            f"PostgreSQL runs as {account.pw_name!r} (it refuses root) but {parent} is not searchable by that "
            f"account, so it cannot reach {path}; put the data folder elsewhere (e.g. under /tmp or /var/lib)"
        )


class PostgresServer(ServerProcess):
    """A throwaway (or, with ``data_dir``, persistent) PostgreSQL cluster listening on ``host:port``.

    Authentication is ``trust`` for the superuser ``postgres``: ``dsn()`` has no password. ``fast=True`` (tests)
    turns off fsync, synchronous commit and full page writes; the local stack passes ``fast=False``.
    ``stop()`` asks for a fast shutdown (SIGINT: open sessions are disconnected; SIGTERM would wait for them).
    """

    name = "postgres"
    graceful_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        fast: bool = True,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            data_dir=data_dir, port=port, host=host, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self._bindir = find_postgres_bindir()
        self._fast = fast
        self._account = _server_account()

    @property
    def bindir(self) -> Path:
        return self._bindir

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def dsn(self, database: str = "postgres") -> str:
        """``postgresql://postgres@HOST:PORT/DATABASE``."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with ``psql`` (unaligned, tuples only) and return its output; DevstackError on failure."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        argv = [
            str(self._bindir / "psql"), "-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql,
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=_PSQL_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise DevstackError(f"psql timed out after {_PSQL_TIMEOUT:.0f} s running {sql!r}") from exc
        if done.returncode != 0:
            raise DevstackError(f"psql failed ({done.returncode}) running {sql!r}: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str, template: str = "template0") -> str:
        """Create database ``name`` as a copy of ``template``; its DSN."""
        validate_database_name(name)
        validate_database_name(template)
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        validate_database_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- ServerProcess --------------------------------------------------------------------------------------

    def _make_data_dir(self) -> Path:
        # Under the system temporary folder, never under pytest's 0700 tmp_path (see the module docstring).
        return Path(tempfile.mkdtemp(prefix="argus-postgres-", dir=tempfile.gettempdir()))

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.data_dir),
        }

    def _owner(self) -> tuple[int | None, int | None]:
        if self._account is None:
            return None, None
        return self._account.pw_uid, self._account.pw_gid

    def _prepare(self) -> None:
        data_dir = self.data_dir
        if self._account is not None:
            _check_reachable(data_dir, self._account)
            os.chown(data_dir, self._account.pw_uid, self._account.pw_gid)
        data_dir.chmod(0o700)
        if (self.pgdata / "PG_VERSION").is_file():
            return
        uid, gid = self._owner()
        argv = [
            str(self._bindir / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--username=postgres",
            "--encoding=UTF8", "--locale=C",
        ]  # fmt: skip
        if self._fast:
            argv.append("--no-sync")
        log_path = self.log_path
        with log_path.open("ab") as log:
            offset = log.tell()
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                    cwd=data_dir, user=uid, group=gid, extra_groups=[] if uid is not None else None,
                    timeout=120, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                raise ServerStartError("initdb timed out", log_tail=read_log_tail(log_path, start=offset)) from exc
        if done.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServerStartError(
                f"initdb failed with code {done.returncode} (log: {log_path})",
                log_tail=read_log_tail(log_path, start=offset),
            )

    def _launch(self) -> Launch:
        socket_dir = str(self.data_dir)
        if len(socket_dir) + len("/.s.PGSQL.65535") > _SOCKET_PATH_MAX:
            socket_dir = ""  # too long for a unix socket path: TCP only
        argv = [
            str(self._bindir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={socket_dir}",
        ]  # fmt: skip
        if self._fast:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        uid, gid = self._owner()
        return Launch(argv=argv, env=self._env(), user=uid, group=gid)

    def _answers(self) -> bool:
        return postgres_answers(self.host, self.port)
