"""The NATS limits have one source, and the deploy configuration files say the same."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from argus_devstack.backends import BACKEND_ENV, choose_backend, requested_backend
from argus_devstack.errors import DevstackError
from argus_devstack.nats import NATS_LIMITS, parse_nats_settings, render_limits_conf
from argus_devstack.process import find_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY_NATS = REPO / "deploy" / "nats"


def test_deploy_limits_conf_matches_the_python_constant() -> None:
    settings = parse_nats_settings((DEPLOY_NATS / "limits.conf").read_text())
    assert settings == dict(NATS_LIMITS)
    assert NATS_LIMITS["max_payload"] == "8MB"


def test_rendered_limits_parse_back() -> None:
    assert parse_nats_settings(render_limits_conf()) == dict(NATS_LIMITS)


def test_parser_skips_blocks_comments_and_includes() -> None:
    text = """
    # comment
    port: 4222 // trailing comment
    jetstream {
      store_dir: /data
      max_file_store: 1GB
    }
    include ./limits.conf
    write_deadline = "2s"
    """
    assert parse_nats_settings(text) == {"port": "4222", "write_deadline": '"2s"'}


def test_production_config_is_valid_and_includes_the_limits() -> None:
    text = (DEPLOY_NATS / "nats.conf").read_text()
    settings = parse_nats_settings(text)
    assert settings["port"] == "4222"
    assert settings["http_port"] == "8222"
    assert "include ./limits.conf" in text
    assert "store_dir: /data/jetstream" in text
    binary = find_binary("nats-server", package="nats-server", extra_dirs=("/usr/sbin",))
    done = subprocess.run(
        [str(binary), "-t", "-c", str(DEPLOY_NATS / "nats.conf")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert requested_backend() == "auto"
    # The Debian binaries are installed here, so auto runs processes and never asks Docker.
    assert choose_backend("nats", docker_available=lambda: pytest.fail("docker probed")) == "process"
    assert choose_backend("postgres", docker_available=lambda: pytest.fail("docker probed")) == "process"
    monkeypatch.setenv(BACKEND_ENV, "containers")
    assert choose_backend("nats") == "containers"
    monkeypatch.setenv(BACKEND_ENV, "Process")
    assert choose_backend("s3") == "process"
    monkeypatch.setenv(BACKEND_ENV, "kubernetes")
    with pytest.raises(DevstackError, match="expected process, containers or auto"):
        requested_backend()


def test_auto_falls_back_to_containers_without_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr("argus_devstack.backends._binary_installed", lambda service: False)
    assert choose_backend("nats", docker_available=lambda: True) == "containers"
    assert choose_backend("nats", docker_available=lambda: False) == "process"
