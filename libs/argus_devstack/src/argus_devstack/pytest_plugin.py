"""pytest plugin: real servers on loopback for Argus tests, and guards against leaked tasks and threads.

Loaded by the root ``pyproject.toml`` (``-p argus_devstack.pytest_plugin``). Fixtures are lazy: a test that asks
for none starts nothing (mark it ``no_servers`` to make that a checked promise).

Servers
    ``nats_server``/``nats_url``: a fresh nats-server with JetStream per test (no JetStream state leaks).
    ``postgres_server``: one cluster per run (per xdist worker); ``database_url``: a fresh database per test,
    dropped afterwards. ``s3_server``: one S3 endpoint per run; ``s3_bucket``: a fresh bucket per test
    (an :class:`S3Target`). ``nats_factory``/``postgres_factory``/``s3_factory``: private servers for a test that
    stops, kills or restarts its own (outage tests), closed when the test ends.

Guards (autouse; ``@pytest.mark.allow_leaks(reason=...)`` turns them off for one test)
    An async test fails when a task created during the test (or by its function-scoped fixtures) is still
    pending after teardown and a few loop iterations. Any test fails when a thread started during it is still
    alive 2 s after teardown (the event loop's default executor is shut down before the check).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final, Protocol, TypeVar

import pytest

from argus_devstack.backends import (
    NatsHandle,
    PostgresHandle,
    S3Handle,
    new_nats_server,
    new_postgres_server,
    new_s3_server,
)
from argus_devstack.errors import DevstackError
from argus_devstack.process import emergency_cleanup
from argus_devstack.s3 import S3Target

__all__ = [
    "NatsFactory",
    "PostgresFactory",
    "S3Factory",
    "bucket_name_for",
    "database_name_for",
]

_log = logging.getLogger(__name__)

SERVER_FIXTURES: Final = frozenset(
    {
        "nats_server",
        "nats_url",
        "nats_factory",
        "postgres_server",
        "database_url",
        "postgres_factory",
        "s3_server",
        "s3_bucket",
        "s3_factory",
    }
)
THREAD_GRACE_SECONDS: Final = 2.0
TASK_GRACE_SECONDS: Final = 0.2
TASK_SETTLE_ITERATIONS: Final = 5

_previous_sigterm = pytest.StashKey[Any]()
_executor_threads = pytest.StashKey[frozenset[threading.Thread]]()


# --- configuration ----------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_servers: the test starts no server (it fails if it requests a server fixture)"
    )
    config.addinivalue_line(
        "markers", "allow_leaks(reason): do not fail the test for tasks or threads it leaves behind"
    )
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        config.stash[_previous_sigterm] = signal.signal(signal.SIGTERM, _on_sigterm)


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(_previous_sigterm, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Kill every server this process started, then die of SIGTERM as if no handler were installed."""
    emergency_cleanup()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("no_servers") is None:
        return
    requested = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if requested:
        pytest.fail(f"{item.nodeid} is marked no_servers but requests {', '.join(requested)}", pytrace=False)


# --- names ------------------------------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def database_name_for(nodeid: str) -> str:
    """A database name for a test: ``t_`` and a hash of its node id (fits Postgres' 63 characters)."""
    return f"t_{_digest(nodeid)}"


def bucket_name_for(nodeid: str) -> str:
    """A fresh S3 bucket name for a test: a hash of its node id and a random part (S3 naming rules)."""
    return f"t-{_digest(nodeid)[:12]}-{secrets.token_hex(3)}"


# --- server fixtures --------------------------------------------------------------------------------------------


class NatsFactory(Protocol):
    def __call__(self, *, data_dir: Path | None = None, port: int | None = None) -> NatsHandle: ...


class PostgresFactory(Protocol):
    def __call__(
        self, *, data_dir: Path | None = None, port: int | None = None, fast: bool = True
    ) -> PostgresHandle: ...


class S3Factory(Protocol):
    def __call__(self, *, data_dir: Path | None = None, port: int | None = None) -> S3Handle: ...


class _Closer:
    """Servers a fixture started, closed in reverse order; every one is closed even when one fails."""

    def __init__(self) -> None:
        self._servers: list[NatsHandle | PostgresHandle | S3Handle] = []

    def add(self, server: NatsHandle | PostgresHandle | S3Handle) -> None:
        self._servers.append(server)

    def close_all(self) -> None:
        errors: list[BaseException] = []
        while self._servers:
            server = self._servers.pop()
            try:
                server.close()
            except (DevstackError, OSError) as exc:
                errors.append(exc)
        if errors:
            raise DevstackError(f"closing servers failed: {errors}")


_S = TypeVar("_S", NatsHandle, PostgresHandle, S3Handle)


def _started(server: _S, closer: _Closer) -> _S:
    closer.add(server)
    server.start()
    return server


@pytest.fixture
def nats_server() -> Iterator[NatsHandle]:
    """A nats-server with JetStream of its own for this test, on random loopback ports."""
    closer = _Closer()
    try:
        yield _started(new_nats_server(), closer)
    finally:
        closer.close_all()


@pytest.fixture
def nats_url(nats_server: NatsHandle) -> str:
    """``nats://127.0.0.1:PORT`` of this test's own nats-server."""
    return nats_server.url


@pytest.fixture
def nats_factory() -> Iterator[NatsFactory]:
    """Start more nats-servers (optionally on a persistent folder or a fixed port); closed after the test."""
    closer = _Closer()

    def factory(*, data_dir: Path | None = None, port: int | None = None) -> NatsHandle:
        return _started(new_nats_server(data_dir=data_dir, port=port), closer)

    try:
        yield factory
    finally:
        closer.close_all()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresHandle]:
    """One PostgreSQL cluster for the whole run (per xdist worker). Do not stop it: use postgres_factory."""
    closer = _Closer()
    try:
        yield _started(new_postgres_server(), closer)
    finally:
        closer.close_all()


@pytest.fixture
def database_url(postgres_server: PostgresHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """The DSN of a fresh, empty database for this test (dropped afterwards)."""
    name = database_name_for(request.node.nodeid)
    try:
        dsn = postgres_server.create_database(name)
    except DevstackError:
        # Left over from an interrupted run of the same test on a persistent server: start clean.
        postgres_server.drop_database(name)
        dsn = postgres_server.create_database(name)
    try:
        yield dsn
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_factory() -> Iterator[PostgresFactory]:
    """Start private PostgreSQL clusters (for tests that stop, kill or restart them); closed after the test."""
    closer = _Closer()

    def factory(*, data_dir: Path | None = None, port: int | None = None, fast: bool = True) -> PostgresHandle:
        return _started(new_postgres_server(data_dir=data_dir, port=port, fast=fast), closer)

    try:
        yield factory
    finally:
        closer.close_all()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Handle]:
    """One S3 endpoint for the whole run (per xdist worker): the environment's, MinIO or moto."""
    closer = _Closer()
    try:
        yield _started(new_s3_server(), closer)
    finally:
        closer.close_all()


@pytest.fixture
def s3_bucket(s3_server: S3Handle, request: pytest.FixtureRequest) -> Iterator[S3Target]:
    """A fresh, uniquely named bucket for this test; emptied and removed afterwards when possible."""
    target = s3_server.make_bucket(bucket_name_for(request.node.nodeid))
    try:
        yield target
    finally:
        _remove_bucket(s3_server, target.bucket)


def _remove_bucket(server: S3Handle, bucket: str) -> None:
    """Best effort: a bucket with locked objects stays (it goes with the server)."""
    import urllib3
    from minio.deleteobjects import DeleteObject
    from minio.error import MinioException

    client = server.client()
    try:
        objects = client.list_objects(bucket, recursive=True, include_version=True)
        to_delete = [DeleteObject(o.object_name, o.version_id) for o in objects if o.object_name is not None]
        for error in client.remove_objects(bucket, to_delete, bypass_governance_mode=True):
            _log.info("bucket %s: could not delete %s: %s", bucket, error.name, error.message)
        client.remove_bucket(bucket)
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        _log.info("bucket %s left on %s: %s", bucket, server.endpoint, exc)


@pytest.fixture
def s3_factory() -> Iterator[S3Factory]:
    """Start private S3 servers (never the environment's) for outage tests; closed after the test.

    moto loses its objects when restarted; a MinIO binary or container keeps them.
    """
    closer = _Closer()

    def factory(*, data_dir: Path | None = None, port: int | None = None) -> S3Handle:
        return _started(new_s3_server(data_dir=data_dir, port=port, allow_env=False), closer)

    try:
        yield factory
    finally:
        closer.close_all()


# --- guards -----------------------------------------------------------------------------------------------------


def _leaks_allowed(item: pytest.Item) -> bool:
    return item.get_closest_marker("allow_leaks") is not None


def _describe_thread(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    where = getattr(target, "__qualname__", None) or type(thread).__qualname__
    module = getattr(target, "__module__", None) or type(thread).__module__
    return f"{thread.name!r} (target {module}.{where}, daemon={thread.daemon})"


def _leaked_threads(before: set[threading.Thread], ignored: frozenset[threading.Thread]) -> list[threading.Thread]:
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    while True:
        left = [
            t for t in threading.enumerate() if t not in before and t not in ignored and t.is_alive()
        ]  # fmt: skip
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _argus_thread_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread it started alive after its teardown (2 s grace)."""
    item = request.node
    if _leaks_allowed(item):
        yield
        return
    before = set(threading.enumerate())
    yield
    ignored = item.stash.get(_executor_threads, frozenset())
    leaked = _leaked_threads(before, ignored)
    if leaked:
        pytest.fail(
            f"{item.nodeid} left {len(leaked)} thread(s) running {THREAD_GRACE_SECONDS:.0f} s after its teardown: "
            + "; ".join(_describe_thread(t) for t in leaked)
            + ". Join the threads a test starts (or mark it allow_leaks).",
            pytrace=False,
        )


def _loop_scope(item: pytest.Item) -> str:
    scope = getattr(item, "_loop_scope", None)
    if isinstance(scope, str):
        return scope
    marker = item.get_closest_marker("asyncio")
    kwargs = marker.kwargs if marker is not None else {}
    value = kwargs.get("loop_scope") or kwargs.get("scope") or item.config.getini("asyncio_default_test_loop_scope")
    return str(value or "function")


def _describe_task(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    where = f" suspended at {frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""
    source = getattr(task, "_source_traceback", None)  # only in asyncio debug mode
    if source:
        where += f", created at {source[-1].filename}:{source[-1].lineno}"
    return f"{task.get_name()!r} running {name}(){where}"


async def _settle_and_collect_leaks(before: set[asyncio.Task[Any]]) -> list[str]:
    """Let the loop run a little, then describe and cancel the tasks created since ``before`` still pending."""
    me = asyncio.current_task()

    def pending() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]

    for _ in range(TASK_SETTLE_ITERATIONS):
        if not pending():
            return []
        await asyncio.sleep(0)
    left = pending()
    if left:
        await asyncio.wait(left, timeout=TASK_GRACE_SECONDS)
    left = pending()
    descriptions = [_describe_task(t) for t in left]
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=1.0)
        for task in left:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" noise
    return descriptions


@pytest.fixture(autouse=True)
def _argus_task_guard(_argus_thread_guard: None, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an async test that leaves a task pending after its teardown.

    Set up right after the thread guard and before the test's event loop runner (requested here, so it is torn
    down after this check and before the thread check: the runner's close shuts down the default executor).
    """
    item = request.node
    if _leaks_allowed(item) or not _is_async_test(item):
        yield
        return
    scope = _loop_scope(item)
    try:
        runner = request.getfixturevalue(f"_{scope}_scoped_runner")
    except pytest.FixtureLookupError as exc:
        raise DevstackError(
            f"the task guard cannot find pytest-asyncio's _{scope}_scoped_runner fixture (did pytest-asyncio "
            "change?): update argus_devstack.pytest_plugin"
        ) from exc
    loop: asyncio.AbstractEventLoop = runner.get_loop()
    before = set(asyncio.all_tasks(loop))
    yield
    if loop.is_closed():
        return
    if scope != "function":
        # That loop (and its executor) outlives the test: its worker threads are not this test's leak.
        executor = getattr(loop, "_default_executor", None)
        item.stash[_executor_threads] = frozenset(getattr(executor, "_threads", ()))
    leaked = runner.run(_settle_and_collect_leaks(before))
    if leaked:
        pytest.fail(
            f"{item.nodeid} left {len(leaked)} asyncio task(s) pending after its teardown: "
            + "; ".join(leaked)
            + ". Await or cancel the tasks a test creates (or mark it allow_leaks).",
            pytrace=False,
        )


def _is_async_test(item: pytest.Item) -> bool:
    with contextlib.suppress(ImportError):
        from pytest_asyncio import is_async_test

        return bool(is_async_test(item))
    return False
