"""Configuration of the ptz service, read from ARGUS_* environment variables."""

from __future__ import annotations

from argus_core.db import DatabaseConfig
from argus_core.identity import TokenConfig
from argus_core.runtime import RuntimeConfig


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    tokens: TokenConfig
