from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from argus_core.config import load_config, unknown_variables
from argus_core.db import DatabaseConfig
from argus_core.errors import ConfigError
from argus_core.runtime import RuntimeConfig


class Sample(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    cameras: tuple[str, ...] = ()
    ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5


def test_reads_typed_values_and_nested_structs() -> None:
    config = load_config(
        Sample,
        {
            "ARGUS_HTTP_PORT": "9001",
            "ARGUS_DB_URL": "postgresql://u@h/db",
            "ARGUS_DB_POOL_MAX": "3",
            "ARGUS_CAMERAS": "a, b,c",
            "ARGUS_LOG_FORMAT": "text",
        },
    )
    assert config.http_port == 9001
    assert config.db.url == "postgresql://u@h/db"
    assert config.db.pool_max == 3
    assert config.cameras == ("a", "b", "c")
    assert config.log_format == "text"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"ARGUS_HTTP_PORT": "eighty", "ARGUS_DB_URL": "postgresql://x"}, "ARGUS_HTTP_PORT"),
        ({"ARGUS_HTTP_PORT": "70000", "ARGUS_DB_URL": "postgresql://x"}, "ARGUS_HTTP_PORT"),
        ({}, "ARGUS_DB_URL"),
        ({"ARGUS_DB_URL": "mysql://x"}, "ARGUS_DB_URL"),
        ({"ARGUS_DB_URL": "postgresql://x", "ARGUS_DB_POOL_MAX": "0"}, "ARGUS_DB_POOL_MAX"),
        ({"ARGUS_DB_URL": "postgresql://x", "ARGUS_RATIO": "2"}, "ARGUS_RATIO"),
        ({"ARGUS_DB_URL": "postgresql://x", "ARGUS_LOG_FORMAT": "xml"}, "ARGUS_LOG_FORMAT"),
    ],
)
def test_a_bad_value_names_its_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Sample, environ)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql://from-file/db\n")
    config = load_config(Sample, {"ARGUS_DB_URL_FILE": str(secret)})
    assert config.db.url == "postgresql://from-file/db"


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Sample, {"ARGUS_DB_URL_FILE": str(tmp_path / "missing")})
    assert caught.value.variable == "ARGUS_DB_URL_FILE"


def test_unknown_variables_are_reported() -> None:
    env = {"ARGUS_HTTP_PRT": "1", "ARGUS_DB_URL": "postgresql://x", "PATH": "/bin"}
    assert unknown_variables(Sample, env) == ["ARGUS_HTTP_PRT"]
