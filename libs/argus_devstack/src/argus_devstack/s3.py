"""An S3 endpoint for tests and the local stack: from the environment, a ``minio`` binary, or moto's server.

In order of preference (``kind=None``):

``env``
    ``ARGUS_TEST_S3_ENDPOINT`` (``host:port`` or ``http(s)://host:port``) with ``ARGUS_TEST_S3_ACCESS_KEY`` and
    ``ARGUS_TEST_S3_SECRET_KEY`` (and optionally ``ARGUS_TEST_S3_REGION``): nothing is started, and the server
    cannot be stopped (``stop()``/``kill()``/``restart()`` raise :class:`ServerStateError`).
``minio``
    a ``minio`` binary on PATH, keeping objects in ``data_dir/objects`` (they survive a restart).
``moto``
    ``python -m moto.server`` from the running interpreter's environment. **moto keeps objects in memory: a
    restart (or kill) loses every bucket and object.** Outage tests still restart it: what matters there is what
    is uploaded after the server comes back.
"""

from __future__ import annotations

import abc
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

from argus_devstack.errors import DevstackError, ServerStartError, ServerStateError
from argus_devstack.probes import http_answers
from argus_devstack.process import Launch, ServerProcess

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["S3Access", "S3Kind", "S3Server", "S3Target", "s3_kind_from_environment"]

S3Kind = Literal["env", "minio", "moto"]

ENV_ENDPOINT: Final = "ARGUS_TEST_S3_ENDPOINT"
ENV_ACCESS_KEY: Final = "ARGUS_TEST_S3_ACCESS_KEY"
ENV_SECRET_KEY: Final = "ARGUS_TEST_S3_SECRET_KEY"
ENV_REGION: Final = "ARGUS_TEST_S3_REGION"

DEFAULT_REGION: Final = "us-east-1"
DEFAULT_ACCESS_KEY: Final = "argus-dev"
DEFAULT_SECRET_KEY: Final = "argus-dev-secret"


@dataclass(frozen=True, slots=True)
class S3Target:
    """Everything a client needs to use one bucket."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    secure: bool
    bucket: str


def s3_kind_from_environment(*, allow_env: bool = True) -> S3Kind:
    """The kind ``S3Server(kind=None)`` picks: ``env`` if configured (and allowed), else ``minio`` if installed,
    else ``moto``."""
    if allow_env and os.environ.get(ENV_ENDPOINT):
        return "env"
    if shutil.which("minio") is not None:
        return "minio"
    return "moto"


class S3Access(abc.ABC):
    """What every S3 endpoint offers (process, environment or container): connection facts and a client."""

    @property
    @abc.abstractmethod
    def kind(self) -> str: ...

    @property
    @abc.abstractmethod
    def endpoint(self) -> str: ...

    @property
    @abc.abstractmethod
    def access_key(self) -> str: ...

    @property
    @abc.abstractmethod
    def secret_key(self) -> str: ...

    @property
    def region(self) -> str:
        return DEFAULT_REGION

    @property
    def secure(self) -> bool:
        return False

    def client(self) -> Minio:
        """A new ``minio.Minio`` client for this endpoint (blocking: use it off the event loop)."""
        from minio import Minio  # imported when used: it is slow to import

        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
        )

    def make_bucket(self, name: str, object_lock: bool = False) -> S3Target:
        """Create bucket ``name`` (blocking); the target describing it."""
        self.client().make_bucket(name, object_lock=object_lock)
        return self.target(name)

    def target(self, bucket: str) -> S3Target:
        """The :class:`S3Target` for ``bucket`` on this endpoint."""
        return S3Target(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            secure=self.secure,
            bucket=bucket,
        )


class S3Server(S3Access, ServerProcess):
    """An S3 endpoint: ``endpoint`` ("127.0.0.1:PORT"), ``access_key``, ``secret_key``, ``region``, ``secure``.

    See the module docstring for the three kinds (``kind`` forces one). Use ``make_bucket()`` or ``client()`` for
    a ``minio.Minio`` client bound to it.
    """

    name = "s3"

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        kind: S3Kind | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            data_dir=data_dir, port=port, host=host, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self._kind: S3Kind = kind if kind is not None else s3_kind_from_environment()
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = DEFAULT_REGION
        self._secure = False
        self._env_endpoint: str | None = None
        self._minio_binary: str | None = None
        self._env_started = False
        if self._kind == "env":
            self._configure_from_environment()
        elif self._kind == "minio":
            self._minio_binary = shutil.which("minio")
            if self._minio_binary is None:
                raise DevstackError("S3Server(kind='minio') needs a 'minio' binary on PATH")
            self.port_count = 2  # API and console
        self.name = f"s3-{self._kind}"

    def _configure_from_environment(self) -> None:
        raw = os.environ.get(ENV_ENDPOINT, "")
        access_key = os.environ.get(ENV_ACCESS_KEY)
        secret_key = os.environ.get(ENV_SECRET_KEY)
        if not raw or not access_key or not secret_key:
            raise DevstackError(f"S3 from the environment needs {ENV_ENDPOINT}, {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}")
        if "://" in raw:
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise DevstackError(f"{ENV_ENDPOINT}={raw!r}: expected host:port or http(s)://host:port")
            self._secure = parts.scheme == "https"
            self._env_endpoint = parts.netloc
        else:
            self._env_endpoint = raw.rstrip("/")
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = os.environ.get(ENV_REGION) or DEFAULT_REGION

    # --- what clients use ------------------------------------------------------------------------------------

    @property
    def kind(self) -> S3Kind:
        return self._kind

    @property
    def endpoint(self) -> str:
        if self._env_endpoint is not None:
            return self._env_endpoint
        return f"{self.host}:{self.port}"

    @property
    def port(self) -> int:
        if self._env_endpoint is not None:
            _, _, port_text = self._env_endpoint.rpartition(":")
            return int(port_text) if port_text.isdigit() else (443 if self._secure else 80)
        return super().port

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return self._region

    @property
    def secure(self) -> bool:
        return self._secure

    # --- life cycle: an endpoint from the environment is never started or stopped ----------------------------

    def start(self) -> None:
        if self._kind != "env":
            super().start()
            return
        if self._closed:
            raise ServerStateError(f"{self.name}: start() after close()")
        scheme = "https" if self._secure else "http"
        if not http_answers(f"{scheme}://{self.endpoint}/", timeout=5.0):
            raise ServerStartError(f"the S3 endpoint from {ENV_ENDPOINT} ({self.endpoint}) does not answer")
        self._env_started = True

    @property
    def running(self) -> bool:
        if self._kind == "env":
            return self._env_started and not self._closed
        return super().running

    def stop(self, timeout: float | None = None) -> None:
        self._refuse_if_env("stop")
        super().stop(timeout)

    def kill(self) -> None:
        self._refuse_if_env("kill")
        super().kill()

    def close(self) -> None:
        if self._kind == "env":
            self._closed = True
            return
        super().close()

    def _refuse_if_env(self, what: str) -> None:
        if self._kind == "env":
            raise ServerStateError(f"cannot {what}() the S3 endpoint from the environment ({self.endpoint})")

    # --- ServerProcess --------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._kind == "minio":
            (self.data_dir / "objects").mkdir(exist_ok=True)

    def _launch(self) -> Launch:
        env = dict(os.environ)
        if self._kind == "minio":
            assert self._minio_binary is not None
            env["MINIO_ROOT_USER"] = self._access_key
            env["MINIO_ROOT_PASSWORD"] = self._secret_key
            argv = [
                self._minio_binary, "server", str(self.data_dir / "objects"),
                "--address", f"{self.host}:{self.port}",
                "--console-address", f"{self.host}:{self._port_at(1)}",
            ]  # fmt: skip
            return Launch(argv=argv, env=env)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        return Launch(argv=argv, env=env)

    def _answers(self) -> bool:
        path = "/minio/health/live" if self._kind == "minio" else "/"
        return http_answers(f"http://{self.host}:{self.port}{path}")
