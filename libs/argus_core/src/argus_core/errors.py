"""The root of Argus's error hierarchy, shared by every service."""

from __future__ import annotations


class ArgusError(Exception):
    """Base of every error Argus raises on purpose."""


class ConfigError(ArgusError):
    """A service's configuration is invalid; `variable` names the environment variable at fault."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem
