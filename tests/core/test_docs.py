"""The README's configuration reference covers every variable a service reads."""

from __future__ import annotations

import importlib
from pathlib import Path

import msgspec
import pytest

from argus_core.config import variables

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_is_documented(service: str) -> None:
    module = importlib.import_module(f"argus_{service}.config")
    config: type[msgspec.Struct] = module.Config
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in variables(config) if f"`{name}`" not in readme]
    assert not missing, f"README.md does not document {missing}"
