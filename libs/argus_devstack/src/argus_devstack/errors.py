"""Errors raised by the devstack server managers."""

from __future__ import annotations


class DevstackError(Exception):
    """Base class of every devstack error."""


class MissingBinaryError(DevstackError):
    """A server binary is not installed."""

    def __init__(self, binary: str, package: str, searched: str) -> None:
        super().__init__(
            f"{binary} not found ({searched}); install the Debian package {package!r} "
            f"(apt-get install {package}) or run the repository's setup step"
        )
        self.binary = binary
        self.package = package


class ServerStartError(DevstackError):
    """A server did not come up; the message carries the tail of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        text = message if not log_tail else f"{message}\n--- last lines of the log ---\n{log_tail}"
        super().__init__(text)
        self.log_tail = log_tail


class PortInUseError(ServerStartError):
    """The port a server was told to use is taken by someone else."""


class ServerStateError(DevstackError):
    """An operation that the server's current state does not allow (for example start() after close())."""
