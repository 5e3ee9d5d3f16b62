"""What a server looks like to its users, whichever backend runs it, and the choice of backend.

``ARGUS_TEST_BACKEND`` chooses: ``process`` (Debian's binaries as child processes), ``containers`` (Docker via
testcontainers) or ``auto`` (the default): a process when the binary is installed, else a container when a Docker
engine answers, else a process (which then fails naming the Debian package to install). S3 from the environment
(``ARGUS_TEST_S3_ENDPOINT``) wins over both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

from argus_devstack.errors import DevstackError, MissingBinaryError
from argus_devstack.nats import NatsServer
from argus_devstack.postgres import PostgresServer, find_postgres_bindir
from argus_devstack.process import find_binary
from argus_devstack.s3 import S3Server, S3Target, s3_kind_from_environment

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "BACKEND_ENV",
    "Backend",
    "ManagedServer",
    "NatsHandle",
    "PostgresHandle",
    "S3Handle",
    "choose_backend",
    "new_nats_server",
    "new_postgres_server",
    "new_s3_server",
    "requested_backend",
]

BACKEND_ENV: Final = "ARGUS_TEST_BACKEND"

Backend = Literal["process", "containers"]
Service = Literal["nats", "postgres", "s3"]


class ManagedServer(Protocol):
    """The life cycle every server offers."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...
    def restart(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


class NatsHandle(ManagedServer, Protocol):
    @property
    def url(self) -> str: ...
    @property
    def monitor_port(self) -> int: ...
    @property
    def monitor_url(self) -> str: ...


class PostgresHandle(ManagedServer, Protocol):
    def dsn(self, database: str = "postgres") -> str: ...
    def psql(self, sql: str, database: str = "postgres") -> str: ...
    def create_database(self, name: str, template: str = "template0") -> str: ...
    def drop_database(self, name: str) -> None: ...


class S3Handle(ManagedServer, Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def secure(self) -> bool: ...
    def client(self) -> Minio: ...
    def make_bucket(self, name: str, object_lock: bool = False) -> S3Target: ...
    def target(self, bucket: str) -> S3Target: ...


def requested_backend() -> Literal["process", "containers", "auto"]:
    """The value of ``ARGUS_TEST_BACKEND`` (``auto`` when unset); DevstackError when it is something else."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if value == "process":
        return "process"
    if value == "containers":
        return "containers"
    if value == "auto":
        return "auto"
    raise DevstackError(f"{BACKEND_ENV}={value!r}: expected process, containers or auto")


def _binary_installed(service: Service) -> bool:
    try:
        if service == "nats":
            find_binary("nats-server", package="nats-server", extra_dirs=("/usr/sbin", "/usr/bin"))
        elif service == "postgres":
            find_postgres_bindir()
    except MissingBinaryError:
        return False
    return True  # S3 always has moto, a dependency of this package


def choose_backend(service: Service, *, docker_available: Callable[[], bool] | None = None) -> Backend:
    """The backend that runs ``service``, following ``ARGUS_TEST_BACKEND`` (see the module docstring)."""
    requested = requested_backend()
    if requested != "auto":
        return requested
    if _binary_installed(service):
        return "process"
    if docker_available is None:
        from argus_devstack.containers import docker_available as probe

        docker_available = probe
    return "containers" if docker_available() else "process"


def new_nats_server(
    *, data_dir: Path | None = None, port: int | None = None, backend: Backend | None = None
) -> NatsHandle:
    """A NATS server (not started). Containers keep their data inside the container, not in ``data_dir``."""
    if (backend or choose_backend("nats")) == "containers":
        from argus_devstack.containers import NatsContainerServer

        return NatsContainerServer(port=port)
    return NatsServer(data_dir=data_dir, port=port)


def new_postgres_server(
    *, data_dir: Path | None = None, port: int | None = None, fast: bool = True, backend: Backend | None = None
) -> PostgresHandle:
    """A PostgreSQL server (not started)."""
    if (backend or choose_backend("postgres")) == "containers":
        from argus_devstack.containers import PostgresContainerServer

        return PostgresContainerServer(port=port, fast=fast)
    return PostgresServer(data_dir=data_dir, port=port, fast=fast)


def new_s3_server(
    *,
    data_dir: Path | None = None,
    port: int | None = None,
    allow_env: bool = True,
    backend: Backend | None = None,
) -> S3Handle:
    """An S3 endpoint (not started): the environment's if configured and ``allow_env``, else a local server.

    Outage tests pass ``allow_env=False``: they need a server they can stop.
    """
    kind = s3_kind_from_environment(allow_env=allow_env)
    if kind == "env":
        return S3Server(kind="env")
    if (backend or choose_backend("s3")) == "containers":
        from argus_devstack.containers import MinioContainerServer

        return MinioContainerServer(port=port)
    return S3Server(data_dir=data_dir, port=port, kind=kind)
