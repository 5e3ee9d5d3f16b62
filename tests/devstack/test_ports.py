"""Port picking and reservations."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from argus_devstack.errors import PortInUseError
from argus_devstack.ports import free_port, port_is_free, reserve_port, retry_on_port_conflict


def test_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    port = free_port()
    assert port_is_free(port)
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        ephemeral_low = int(handle.read().split()[0])
    if ephemeral_low > 21000:
        assert 20000 <= port < ephemeral_low


def test_a_bound_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_a_reserved_port_is_not_handed_out_again() -> None:
    with reserve_port() as held:
        with pytest.raises(PortInUseError):
            reserve_port(port=held.port)
        others = [reserve_port() for _ in range(20)]
        try:
            assert held.port not in {r.port for r in others}
        finally:
            for reservation in others:
                reservation.release()
    assert not held.held
    again = reserve_port(port=held.port)
    again.release()
    again.release()  # idempotent


def test_a_reservation_holds_across_processes() -> None:
    with reserve_port() as held:
        code = (
            "import sys\n"
            "from argus_devstack.ports import reserve_port\n"
            "from argus_devstack.errors import PortInUseError\n"
            "try:\n"
            f"    reserve_port(port={held.port})\n"
            "except PortInUseError:\n"
            "    sys.exit(3)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], timeout=30, check=False)
        assert done.returncode == 3


def test_retry_on_port_conflict() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise PortInUseError("taken")
        return "started"

    assert retry_on_port_conflict(flaky, attempts=5) == "started"
    assert len(calls) == 3

    def always() -> str:
        raise PortInUseError("taken")

    with pytest.raises(PortInUseError):
        retry_on_port_conflict(always, attempts=2)
