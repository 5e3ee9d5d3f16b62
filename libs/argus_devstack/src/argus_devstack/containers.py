"""Docker alternates of the process servers, with testcontainers: same attributes, same life cycle.

Used when ``ARGUS_TEST_BACKEND=containers`` (or ``auto`` on a machine without the Debian binaries but with a
reachable Docker engine). A container is created at the first ``start()`` with its ports published on host ports
reserved like the process servers' (so ``stop()``/``start()`` keep them), stopped and started again with Docker
(its files stay in the container, so data survives), and removed by ``close()``. testcontainers' Ryuk container
removes whatever is left if this process dies.

testcontainers is a development dependency: it is imported only when a container is built.
"""

from __future__ import annotations

import abc
import contextlib
import shutil
import subprocess
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast

from argus_devstack.errors import DevstackError, ServerStartError, ServerStateError
from argus_devstack.nats import render_limits_conf
from argus_devstack.ports import PortReservation, reserve_port
from argus_devstack.postgres import validate_database_name
from argus_devstack.probes import http_answers, nats_info, postgres_answers
from argus_devstack.s3 import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, S3Access

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

__all__ = [
    "ContainerServer",
    "MinioContainerServer",
    "NatsContainerServer",
    "PostgresContainerServer",
    "docker_available",
]

NATS_IMAGE: Final = "nats:2.10"
POSTGRES_IMAGE: Final = "postgres:15"
MINIO_IMAGE: Final = "minio/minio:RELEASE.2022-12-02T19-19-22Z"
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def docker_available(timeout: float = 5.0) -> bool:
    """Whether a Docker engine answers ``docker info`` within ``timeout`` seconds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


class ContainerServer(abc.ABC):
    """A server in a Docker container, with the life cycle of :class:`argus_devstack.process.ServerProcess`."""

    name: str = "container"
    #: the container ports to publish; the first is the main port
    container_ports: tuple[int, ...] = ()

    def __init__(self, *, image: str, port: int | None = None, start_timeout: float = 120.0) -> None:
        self._image = image
        self._requested_port = port
        self._start_timeout = start_timeout
        self._reservations: list[PortReservation] = []
        self._container: DockerContainer | None = None
        self._host = "127.0.0.1"
        self._closed = False
        self._lock = threading.RLock()

    @abc.abstractmethod
    def _build(self) -> DockerContainer:
        """The configured (not started) testcontainers object."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """Whether the server answers on ``host:port`` now."""

    # --- state ----------------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port_at(0)

    def _port_at(self, index: int) -> int:
        if len(self._reservations) <= index:
            raise ServerStateError(f"{self.name}: ports are known only after the first start()")
        return self._reservations[index].port

    @property
    def running(self) -> bool:
        container = self._container
        if container is None:
            return False
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def log_tail(self, max_lines: int = 40) -> str:
        if self._container is None:
            return ""
        with contextlib.suppress(DevstackError, OSError):
            raw = self._container.get_wrapped_container().logs(tail=max_lines)
            return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return ""

    # --- life cycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise ServerStateError(f"{self.name}: start() after close()")
            if self._container is None:
                self._create_and_start()
            elif not self.running:
                self._container.get_wrapped_container().start()
            self._wait_until_answering()

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._container is not None:
                self._container.get_wrapped_container().stop(timeout=int(timeout if timeout is not None else 10))

    def kill(self) -> None:
        with self._lock:
            if self._container is not None and self.running:
                self._container.get_wrapped_container().kill()

    def restart(self, timeout: float | None = None) -> None:
        self.stop(timeout)
        self.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            container, self._container = self._container, None
            try:
                if container is not None:
                    container.stop()
            finally:
                for reservation in self._reservations:
                    reservation.release()
                self._reservations.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        ports = ",".join(str(r.port) for r in self._reservations) or "-"
        return f"<{type(self).__name__} {self._image} {self._host}:{ports}>"

    # --- internals ------------------------------------------------------------------------------------------

    def _create_and_start(self) -> None:
        for index in range(len(self.container_ports)):
            wanted = self._requested_port if index == 0 else None
            self._reservations.append(reserve_port("127.0.0.1", wanted))
        try:
            container = self._build()
            docker_host = container.get_docker_client().host()
            local = docker_host in _LOCAL_HOSTS
            self._host = "127.0.0.1" if local else docker_host
            ports = cast(dict[str, Any], container.ports)
            for container_port, reservation in zip(self.container_ports, self._reservations, strict=True):
                # Published on loopback only when the engine is local; a remote engine publishes on its host.
                ports[str(container_port)] = ("127.0.0.1", reservation.port) if local else reservation.port
            self._container = container
            container.start()
        except BaseException:
            for reservation in self._reservations:
                reservation.release()
            self._reservations.clear()
            raise

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        delay = 0.01
        while not self._answers():
            if not self.running:
                raise ServerStartError(f"{self.name} container exited before it answered", log_tail=self.log_tail())
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.name} container did not answer on {self._host}:{self.port} within "
                    f"{self._start_timeout:.0f} s",
                    log_tail=self.log_tail(),
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)


class NatsContainerServer(ContainerServer):
    """nats-server with JetStream in a container (``nats:2.10``), configured with the same limits."""

    name = "nats"
    container_ports = (4222, 8222)

    def __init__(self, port: int | None = None, *, image: str = NATS_IMAGE, start_timeout: float = 120.0) -> None:
        super().__init__(image=image, port=port, start_timeout=start_timeout)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_port(self) -> int:
        return self._port_at(1)

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def _build(self) -> DockerContainer:
        from testcontainers.community.nats import NatsContainer

        config = "\n".join(
            [
                "listen: 0.0.0.0:4222",
                "http: 0.0.0.0:8222",
                "jetstream {",
                "  store_dir: /data",
                "}",
                'include "limits.conf"',
                "",
            ]
        )
        container = NatsContainer(self._image, jetstream=False)
        container.with_command("-js -c /etc/nats/nats.conf")
        container.with_copy_into_container(config.encode(), "/etc/nats/nats.conf")
        container.with_copy_into_container(render_limits_conf().encode(), "/etc/nats/limits.conf")
        return container

    def _answers(self) -> bool:
        info = nats_info(self.host, self.port)
        return info is not None and info.get("jetstream") is True


class PostgresContainerServer(ContainerServer):
    """PostgreSQL 15 in a container, trust authentication for ``postgres`` like :class:`PostgresServer`."""

    name = "postgres"
    container_ports = (5432,)

    def __init__(
        self,
        port: int | None = None,
        *,
        fast: bool = True,
        image: str = POSTGRES_IMAGE,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(image=image, port=port, start_timeout=start_timeout)
        self._fast = fast

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with the container's own ``psql``; its output."""
        if self._container is None:
            raise ServerStateError(f"{self.name}: psql() before start()")
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, "-c", sql]
        result = self._container.exec(argv)
        output = result.output.decode("utf-8", errors="replace")
        if result.exit_code != 0:
            raise DevstackError(f"psql in the container failed ({result.exit_code}) running {sql!r}: {output}")
        return output

    def create_database(self, name: str, template: str = "template0") -> str:
        validate_database_name(name)
        validate_database_name(template)
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        validate_database_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _build(self) -> DockerContainer:
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(
            self._image, username="postgres", password="postgres", dbname="postgres", driver=None
        )
        container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
        if self._fast:
            container.with_command("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        return container

    def _answers(self) -> bool:
        return postgres_answers(self.host, self.port)


class MinioContainerServer(S3Access, ContainerServer):
    """MinIO in a container: the S3 endpoint of the containers backend (objects survive stop/start)."""

    name = "minio"
    container_ports = (9000,)

    def __init__(
        self,
        port: int | None = None,
        *,
        image: str = MINIO_IMAGE,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(image=image, port=port, start_timeout=start_timeout)
        self._access_key = access_key
        self._secret_key = secret_key

    @property
    def kind(self) -> str:
        return "minio"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    def _build(self) -> DockerContainer:
        from testcontainers.community.minio import MinioContainer

        container = MinioContainer(self._image, access_key=self._access_key, secret_key=self._secret_key)
        container.with_env("MINIO_ROOT_USER", self._access_key)
        container.with_env("MINIO_ROOT_PASSWORD", self._secret_key)
        return container

    def _answers(self) -> bool:
        return http_answers(f"http://{self.endpoint}/minio/health/live")
