"""The plugin's guards, exercised on inner pytest runs (pytester, in a subprocess so leaks stay there).

``pytest_plugins`` is set here rather than in ``tests/devstack/conftest.py``: pytest refuses it in a conftest below
the root directory when the whole suite runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INNER_ARGS = (
    "-p",
    "argus_devstack.pytest_plugin",
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_mode=auto",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
    "-o",
    "asyncio_default_test_loop_scope=function",
    "-W",
    "error",
)


def run_inner(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess(*INNER_ARGS, "-v", timeout=120)


def test_a_leaked_task_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio

        async def test_leaks_a_task():
            asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten-ticker")
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_leaks_a_task left 1 asyncio task(s) pending after its teardown*forgotten-ticker*sleep*"]
    )


def test_a_task_leaked_by_a_function_fixture_fails_too(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import pytest

        @pytest.fixture
        async def background():
            asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="fixture-leak")
            yield

        async def test_uses_it(background):
            pass
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*left 1 asyncio task(s) pending*fixture-leak*"])


def test_clean_tests_pass(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import contextlib
        import threading
        import pytest

        @pytest.fixture(scope="session")
        def session_worker():
            stop = threading.Event()
            worker = threading.Thread(target=stop.wait, name="session-worker")
            worker.start()
            yield
            stop.set()
            worker.join()

        def test_uses_a_session_thread(session_worker):
            pass

        async def test_uses_a_session_thread_too(session_worker):
            pass

        @pytest.fixture
        async def ticker():
            task = asyncio.create_task(asyncio.sleep(3600), name="owned")
            yield task
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        async def test_with_an_owned_task(ticker):
            assert not ticker.done()

        async def test_task_finishing_on_its_own():
            asyncio.create_task(asyncio.sleep(0))

        async def test_executor_threads_are_not_leaks():
            assert await asyncio.to_thread(lambda: 42) == 42

        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop_executor_threads_are_not_leaks():
            assert await asyncio.to_thread(lambda: 7) == 7

        def test_sync_test():
            pass
        """,
    )
    result.assert_outcomes(passed=7)


def test_a_leaked_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import threading
        import time

        def test_leaks_a_thread():
            threading.Thread(target=time.sleep, args=(30,), name="forgotten-worker", daemon=True).start()

        async def test_leaks_a_thread_from_async():
            threading.Thread(target=time.sleep, args=(30,), name="async-forgotten", daemon=True).start()
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_leaks_a_thread left 1 thread(s) running 2 s after its teardown*forgotten-worker*",
            "*test_leaks_a_thread_from_async left 1 thread(s) running*async-forgotten*",
        ],
        consecutive=False,
    )


def test_a_thread_that_ends_within_the_grace_period_passes(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import threading
        import time

        def test_short_thread():
            threading.Thread(target=time.sleep, args=(0.3,), name="short").start()
        """,
    )
    result.assert_outcomes(passed=1)


def test_allow_leaks_marker(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import threading
        import time
        import pytest

        @pytest.mark.allow_leaks(reason="testing the marker")
        async def test_leaks_both():
            asyncio.get_running_loop().create_task(asyncio.sleep(3600))
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        """,
    )
    result.assert_outcomes(passed=1)


def test_the_plugin_server_fixtures_do_not_trip_the_guards(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import nats
        import pytest

        async def test_nats(nats_url):
            nc = await nats.connect(nats_url)
            await nc.close()

        def test_postgres(database_url):
            assert database_url.startswith("postgresql://postgres@127.0.0.1:")

        async def test_s3(s3_bucket):
            await asyncio.to_thread(lambda: None)

        @pytest.mark.no_servers
        def test_pure_unit():
            pass

        @pytest.mark.no_servers
        def test_broken_promise(nats_url):
            pass
        """,
    )
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*test_broken_promise is marked no_servers but requests nats_server, nats_url*"])


def test_sigterm_to_pytest_kills_its_servers(pytester: pytest.Pytester) -> None:
    pid_file = pytester.path / "server.pid"
    pytester.makepyfile(
        test_inner=f"""
        import pathlib
        import time

        def test_hangs(nats_server):
            pathlib.Path({str(pid_file)!r}).write_text(str(nats_server.pid))
            time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *INNER_ARGS, "-p", "no:timeout", "test_inner.py"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        server_pid = int(pid_file.read_text())
        os.kill(server_pid, 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stat = Path(f"/proc/{server_pid}/stat")
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"
