"""The shared child-process life cycle, with small shell "servers" that misbehave on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from argus_devstack.errors import ServerStartError
from argus_devstack.probes import http_answers
from argus_devstack.process import Launch, ServerProcess


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists"; it is dead for our purpose.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def dies(pid: int, within_s: float = 3.0) -> bool:
    """True once `pid` is gone; SIGKILL is delivered asynchronously, so give it a moment."""
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class ShellServer(ServerProcess):
    """Runs a shell script; "answers" when the script has created the file ``ready`` in its data folder."""

    name = "shell"

    def __init__(self, script: str, *, start_timeout: float = 5.0, stop_timeout: float = 5.0) -> None:
        super().__init__(data_dir=None, port=None, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self._script = script

    def _prepare(self) -> None:
        pass

    def _launch(self) -> Launch:
        return Launch(argv=["/bin/sh", "-c", self._script])

    def _answers(self) -> bool:
        return (self.data_dir / "ready").exists()


def test_a_server_that_never_answers_times_out_with_its_log() -> None:
    server = ShellServer("echo warming up; exec sleep 60", start_timeout=0.5)
    try:
        with pytest.raises(ServerStartError, match=r"did not answer") as caught:
            server.start()
        assert "warming up" in caught.value.log_tail
        assert not server.running
    finally:
        server.close()


def test_a_server_that_exits_early_reports_its_code_and_log() -> None:
    server = ShellServer("echo 'fatal: bad config' >&2; exit 7")
    try:
        with pytest.raises(ServerStartError, match=r"exited with code 7") as caught:
            server.start()
        assert "fatal: bad config" in str(caught.value)
    finally:
        server.close()


def test_stop_escalates_to_sigkill_for_the_whole_tree() -> None:
    # The shell ignores SIGTERM and has a child of its own.
    server = ShellServer("trap '' TERM; sleep 60 & echo $! > child; touch ready; wait", stop_timeout=0.3)
    try:
        server.start()
        leader = server.pid
        assert leader is not None
        child_file = server.data_dir / "child"
        deadline = time.monotonic() + 5
        while not child_file.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.01)
        child = int(child_file.read_text())
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 3
        assert dies(leader)
        assert dies(child)
    finally:
        server.close()


def test_kill_reaches_descendants_in_their_own_session() -> None:
    # Like PostgreSQL's backends, the grandchild leaves the process group with setsid.
    server = ShellServer("setsid sleep 60 & echo $! > child; touch ready; wait")
    try:
        server.start()
        child_file = server.data_dir / "child"
        deadline = time.monotonic() + 5
        while not child_file.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.01)
        child = int(child_file.read_text())
        assert alive(child)
        server.kill()
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(child)
    finally:
        server.close()


def test_output_goes_to_the_log_file_not_to_pytest(capfd: pytest.CaptureFixture[str]) -> None:
    with ShellServer("echo hello-from-the-server; echo and-stderr >&2; touch ready; exec sleep 60") as server:
        deadline = time.monotonic() + 5
        while "and-stderr" not in server.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "hello-from-the-server" in server.log_path.read_text()
    out, err = capfd.readouterr()
    assert "hello-from-the-server" not in out + err


def test_no_server_outlives_its_process() -> None:
    """A process that forgets to close its servers still leaves nothing behind (atexit)."""
    script = textwrap.dedent(
        """
        from argus_devstack.nats import NatsServer
        from argus_devstack.s3 import S3Server
        nats = NatsServer()
        nats.start()
        s3 = S3Server(kind="moto")
        s3.start()
        print(nats.pid, nats.data_dir, s3.pid, s3.port, flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    nats_pid, nats_dir, s3_pid, s3_port = done.stdout.split()
    assert dies(int(nats_pid))
    assert dies(int(s3_pid))
    assert not Path(nats_dir).exists()
    assert not http_answers(f"http://127.0.0.1:{s3_port}/")
