"""Quick "does it answer?" probes, speaking just enough of each protocol to know the server serves clients."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import urllib.error
import urllib.request
from typing import Any, Final

__all__ = ["http_answers", "nats_info", "postgres_answers"]

_PG_PROTOCOL_3: Final = 196608


def nats_info(host: str, port: int, timeout: float = 0.5) -> dict[str, Any] | None:
    """The INFO a NATS server greets a client with, or None when it does not (yet)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def postgres_answers(host: str, port: int, *, user: str = "postgres", timeout: float = 0.5) -> bool:
    """Whether Postgres accepts a session now (not "starting up", "shutting down" or "in recovery").

    Sends a protocol 3.0 startup message: an authentication request or success ('R') means the server is
    ready to serve; an error ('E') means it is not.
    """
    params = b"user\x00" + user.encode() + b"\x00database\x00postgres\x00\x00"
    startup = struct.pack("!ii", 8 + len(params), _PG_PROTOCOL_3) + params
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(startup)
            kind = sock.recv(1)
            if kind == b"R":
                sock.sendall(b"X\x00\x00\x00\x04")
            return kind == b"R"
    except OSError:
        return False


def http_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether an HTTP server answers ``url`` with any status (proxies from the environment are ignored)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            response.read(0)
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False
    return True
