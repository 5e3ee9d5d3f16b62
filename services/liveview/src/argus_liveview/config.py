"""Configuration of the liveview service, read from ARGUS_* environment variables."""

from __future__ import annotations

from argus_core.identity import TokenConfig
from argus_core.runtime import RuntimeConfig


class Config(RuntimeConfig, frozen=True, kw_only=True):
    tokens: TokenConfig
