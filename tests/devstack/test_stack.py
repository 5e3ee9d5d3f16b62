"""The README's first command: the local stack comes up with every service ready, and stops cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from argus_devstack.stack import postgres_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_local_stack_comes_up_ready_and_stops() -> None:
    state = Path(tempfile.mkdtemp(prefix="argus-stack-test-"))
    try:
        check_stack(state)
    finally:
        shutil.rmtree(postgres_dir(state).parent, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def check_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_STACK_")}
    # Ports of its own, so that a stack a developer is running (or another test worker) does not collide.
    for name in ("nats", "postgres", "s3", "api", "ingest", "recorder", "liveview", "ptz", "retention", "audit"):
        env[f"ARGUS_STACK_{name.upper()}_PORT"] = "0"
    env["ARGUS_STACK_SIMCAM_PORT"] = "0"
    env["ARGUS_STACK_RTSP_PORT"] = "0"
    result = subprocess.run(
        [sys.executable, "-m", "argus_devstack.stack", "--check", "--cameras", "2", "--state-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Argus is up." in result.stdout
    for service in ("api", "ingest", "recorder", "liveview", "ptz", "retention", "audit"):
        assert f"{service} ready" in result.stderr
    assert (tmp_path / "token").read_text().count(".") == 2  # a signed JWT for the console
