"""ICE for liveview's peers: which local addresses and ports, which advertised addresses, which STUN/TURN servers.

aioice (under aiortc) gathers host candidates on every interface address but loopback, on ephemeral ports, and has
no notion of an address seen from outside a NAT. `IcePolicy.install()` takes over the host part of gathering for one
peer connection, before its local description is set:

- host candidates on `ice_hosts` (default: every interface address, loopback included), each on a UDP port from
  the configured range;
- an extra host candidate for each advertised address (`ice_advertise`, a 1:1 NAT's public address) with the port
  of each bound non-loopback socket of the same family: the NAT forwards it to that socket;
- server-reflexive candidates from the STUN server and a relayed one from the TURN server, as aioice does.

`accepts_remote()` filters the viewer's candidates: a socket bound to loopback can only reach loopback, so a peer
whose local candidates are all loopback ignores the others (and never sends a check or an mDNS query off the host).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol, get_host_addresses, server_reflexive_candidate
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from argus_liveview.config import LiveviewSettings

log = logging.getLogger(__name__)

_UDP_BUFFER = 1024 * 1024
_GATHER_TIMEOUT_S = 5.0
_ADVERTISED_PREF = 65535  # local preference of an advertised address: above the bound ones
_BOUND_PREF = 65000
_LOOPBACK_PREF = 60000


class IceError(Exception):
    """No host candidate could be bound (every port of the range in use, or no usable address)."""


def interface_addresses() -> list[str]:
    """Every address aioice would gather on (IPv4, and IPv6 without a scope), and loopback too."""
    return list(dict.fromkeys([*get_host_addresses(use_ipv4=True, use_ipv6=True), "127.0.0.1", "::1"]))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _family(host: str) -> int:
    return ipaddress.ip_address(host).version


@dataclass
class IcePolicy:
    """ICE settings of every peer connection of this process."""

    hosts: tuple[str, ...] = ()
    advertise: tuple[str, ...] = ()
    port_min: int = 0
    port_max: int = 0
    servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_password: str = ""
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_settings(cls, settings: LiveviewSettings) -> IcePolicy:
        return cls(
            hosts=settings.ice_hosts,
            advertise=settings.ice_advertise,
            port_min=settings.ice_port_min,
            port_max=settings.ice_port_max,
            servers=settings.ice_servers,
            turn_username=settings.turn_username,
            turn_password=settings.turn_password,
        )

    def configuration(self) -> RTCConfiguration:
        """The peer connection's configuration: our ICE servers, and never aiortc's default public STUN server."""
        servers = [
            RTCIceServer(urls=url, username=self.turn_username or None, credential=self.turn_password or None)
            if url.startswith("turn")
            else RTCIceServer(urls=url)
            for url in self.servers
        ]
        return RTCConfiguration(iceServers=servers)

    def bind_hosts(self) -> list[str]:
        return list(self.hosts) if self.hosts else interface_addresses()

    @property
    def has_relay(self) -> bool:
        return any(url.startswith("turn") for url in self.servers)

    def accepts_remote(self, host: str, local: list[str] | None = None) -> bool:
        """Whether a viewer's candidate at `host` (an address or an mDNS name) can be reached from ours (`local`:
        the addresses we bind, if the caller has them at hand)."""
        if self.has_relay:
            return True
        local = self.bind_hosts() if local is None else local
        if host.endswith(".local"):
            return any(not _is_loopback(h) for h in local)
        try:
            remote = ipaddress.ip_address(host)
        except ValueError:
            return False
        for h in local:
            address = ipaddress.ip_address(h)
            if address.version != remote.version:
                continue
            if not address.is_loopback or remote.is_loopback:
                return True
        return False

    def filter_offer(self, sdp: str) -> tuple[str, int]:
        """The offer without the candidates we cannot reach, and how many were left out."""
        local = self.bind_hosts()
        kept: list[str] = []
        dropped = 0
        for line in sdp.splitlines():
            if line.startswith("a=candidate:"):
                parts = line.split()
                if len(parts) < 8 or not self.accepts_remote(parts[4], local):
                    dropped += 1
                    continue
            kept.append(line)
        return "\r\n".join(kept) + "\r\n", dropped

    def install(self, pc: RTCPeerConnection) -> None:
        """Take over host gathering of `pc`'s ICE transports (after setRemoteDescription, before
        setLocalDescription). aiortc creates aioice's Connection itself, so its component gathering is replaced on
        that instance; nothing else of aioice changes."""
        for transceiver in pc.getTransceivers():
            gatherer = transceiver.sender.transport.transport.iceGatherer
            connection = gatherer._connection  # aiortc keeps the aioice Connection here; no public accessor
            if getattr(connection, "argus_ice_installed", False) or gatherer.state != "new":
                continue

            async def component_candidates(
                component: int,
                addresses: list[str],
                timeout: int = 5,  # noqa: ASYNC109 - aioice's signature
                *,
                _connection: Connection = connection,
            ) -> list[Candidate]:
                del addresses, timeout  # aioice's host list (no loopback) is replaced by ours
                return await self._gather(_connection, component)

            connection.get_component_candidates = component_candidates  # type: ignore[method-assign]
            connection.argus_ice_installed = True  # type: ignore[attr-defined]

    async def _gather(self, connection: Connection, component: int) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []
        protocols: list[StunProtocol] = []
        for host in self.bind_hosts():
            try:
                sock = self._bind(host)
            except (OSError, IceError) as exc:
                # An explicit address or a port range that is full is news; an interface without IPv6 is not.
                level = logging.WARNING if self.hosts or isinstance(exc, IceError) else logging.DEBUG
                log.log(level, "ICE: cannot bind a UDP port on %s: %s", host, exc)
                continue
            _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection), sock=sock)
            address = protocol.transport.get_extra_info("sockname")
            pref = _LOOPBACK_PREF if _is_loopback(address[0]) else _BOUND_PREF
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", address[0]),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host", pref),
                host=address[0],
                port=address[1],
                type="host",
            )
            protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        if not protocols:
            raise IceError(f"no UDP port could be bound on {self.bind_hosts()}")
        # The connection owns its sockets: it pairs them with remote candidates and closes them.
        connection._protocols += protocols
        for public in self.advertise:
            for protocol in protocols:
                local = protocol.local_candidate
                if _is_loopback(local.host) or _family(local.host) != _family(public):
                    continue
                candidates.append(
                    Candidate(
                        foundation=candidate_foundation("host", "udp", public),
                        component=component,
                        transport="udp",
                        priority=candidate_priority(component, "host", _ADVERTISED_PREF),
                        host=public,
                        port=local.port,
                        type="host",
                    )
                )
        candidates += await self._server_candidates(connection, component, protocols)
        return candidates

    async def _server_candidates(
        self, connection: Connection, component: int, protocols: Iterable[StunProtocol]
    ) -> list[Candidate]:
        """Server-reflexive candidates (STUN, IPv4 sockets not on loopback) and the relayed one (TURN)."""
        out: list[Candidate] = []
        tasks: list[asyncio.Task[tuple[Candidate, None]]] = []
        stun_server = connection.stun_server
        if stun_server is not None:
            for protocol in protocols:
                host = protocol.local_candidate.host
                if _family(host) == 4 and not _is_loopback(host):
                    tasks.append(asyncio.create_task(server_reflexive_candidate(protocol, stun_server)))
        try:
            if tasks:
                done, _ = await asyncio.wait(tasks, timeout=_GATHER_TIMEOUT_S)
                for task in done:
                    if not task.cancelled() and task.exception() is None:
                        out.append(task.result()[0])
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        if connection.turn_server is not None:
            # aioice's own gathering with no host addresses does exactly the TURN allocation.
            out += await Connection.get_component_candidates(connection, component=component, addresses=[])
        return out

    def _bind_in_range(self, sock: socket.socket, host: str) -> bool:
        span = self.port_max - self.port_min + 1
        first = self._rng.randrange(span)
        for i in range(span):
            try:
                sock.bind((host, self.port_min + (first + i) % span))
            except OSError:
                continue
            return True
        return False

    def _bind(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if _family(host) == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        bound = False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _UDP_BUFFER)
            if self.port_min == 0:
                sock.bind((host, 0))
                bound = True
            else:
                bound = self._bind_in_range(sock, host)
            sock.setblocking(False)
        finally:
            if not bound:
                sock.close()
        if not bound:
            raise IceError(f"every UDP port {self.port_min}-{self.port_max} on {host} is in use")
        return sock
