"""WS-Discovery responder: answers Probe messages for the simulated cameras, as ONVIF devices do.

ONVIF uses WS-Discovery 2005/04 over SOAP 1.2 and UDP: a client multicasts a Probe to 239.255.255.250:3702 and
every matching device answers with a ProbeMatches message sent unicast to the Probe's source address and port.
Here one responder answers for many cameras, one ProbeMatches datagram per matching camera (each as if sent by
that device). Replies go only to the address a Probe came from; nothing is ever sent anywhere else, and
Hello/Bye announcements are not sent at all.

Tests bind 127.0.0.1 on port 0 and send the Probe unicast; the service binds 0.0.0.0:3702 with
`join_multicast=True`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

from argus_simcam.onvif.camera import OnvifCamera
from argus_simcam.onvif.soap import Node, local_name, serialize, unsafe_xml

__all__ = [
    "DEVICE_TYPE",
    "MULTICAST_GROUP",
    "NVT_TYPE",
    "WSD_PORT",
    "DiscoveryResponder",
    "DiscoveryTarget",
    "Probe",
    "parse_probe",
    "probe_matches",
]

_log = logging.getLogger(__name__)

MULTICAST_GROUP = "239.255.255.250"
WSD_PORT = 3702
ENV = "http://www.w3.org/2003/05/soap-envelope"
WSD_NS = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
WSA_NS = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSA_ANONYMOUS = f"{WSA_NS}/role/anonymous"
PROBE_ACTION = f"{WSD_NS}/Probe"
PROBE_MATCHES_ACTION = f"{WSD_NS}/ProbeMatches"
MATCH_RFC3986 = f"{WSD_NS}/rfc3986"
MATCH_STRCMP0 = f"{WSD_NS}/strcmp0"
NVT_TYPE = ("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter")
DEVICE_TYPE = ("http://www.onvif.org/ver10/device/wsdl", "Device")
# A Probe is a few hundred bytes; anything much bigger is not one.
MAX_PROBE_BYTES = 16 * 1024

QName = tuple[str, str]  # (namespace, local name)


@dataclass(frozen=True, slots=True)
class DiscoveryTarget:
    """One device as discovery announces it."""

    endpoint: str  # stable `urn:uuid:...` (OnvifCamera.endpoint_reference)
    xaddrs: Sequence[str]  # device service URLs, e.g. http://192.0.2.10:8000/onvif/device_service
    scopes: Sequence[str]  # OnvifCamera.scopes()
    types: Sequence[QName] = (NVT_TYPE, DEVICE_TYPE)
    metadata_version: int = 1

    @classmethod
    def for_camera(cls, camera: OnvifCamera, device_urls: Sequence[str]) -> DiscoveryTarget:
        """The target announcing `camera`, whose device service is reachable at `device_urls`."""
        return cls(camera.endpoint_reference, tuple(device_urls), tuple(camera.scopes()))


@dataclass(frozen=True, slots=True)
class Probe:
    message_id: str | None
    types: tuple[QName, ...]
    scopes: tuple[str, ...]
    match_by: str = MATCH_RFC3986
    # A prefix in Types that the Probe did not declare: such a Probe matches nothing.
    unresolved_type: bool = False


def _scoped_parse(raw: bytes) -> tuple[ET.Element, dict[int, dict[str, str]]]:
    """Parse `raw`, recording the in-scope namespace declarations of every element (by id)."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start-ns", "start", "end"))
    parser.feed(raw)
    parser.close()
    scopes: dict[int, dict[str, str]] = {}
    stack: list[dict[str, str]] = [{}]
    pending: dict[str, str] = {}
    root: ET.Element | None = None
    for entry in parser.read_events():
        event, item = entry[0], (entry[1] if len(entry) > 1 else None)
        if event == "start-ns" and isinstance(item, tuple) and len(item) == 2:
            pending[str(item[0])] = str(item[1])
        elif event == "start" and isinstance(item, ET.Element):
            root = item if root is None else root
            scope = {**stack[-1], **pending} if pending else stack[-1]
            pending = {}
            stack.append(scope)
            scopes[id(item)] = scope
        elif event == "end":
            stack.pop()
    if root is None:
        raise ET.ParseError("no root element")
    return root, scopes


def parse_probe(raw: bytes) -> Probe | None:
    """The Probe in a datagram, or None if it is not a well-formed WS-Discovery Probe."""
    if len(raw) > MAX_PROBE_BYTES or unsafe_xml(raw) is not None:
        return None
    try:
        root, ns_scopes = _scoped_parse(raw)
    except ET.ParseError:
        return None
    if root.tag != f"{{{ENV}}}Envelope":
        return None
    probe = root.find(f"{{{ENV}}}Body/{{{WSD_NS}}}Probe")
    if probe is None:
        return None
    message_id: str | None = None
    header = root.find(f"{{{ENV}}}Header")
    if header is not None:
        for item in header:
            if local_name(item.tag) == "MessageID" and item.text:
                message_id = item.text.strip()
    types: list[QName] = []
    unresolved = False
    types_el = probe.find(f"{{{WSD_NS}}}Types")
    if types_el is not None and types_el.text:
        declared = ns_scopes.get(id(types_el), {})
        for qname in types_el.text.split():
            prefix, sep, name = qname.rpartition(":")
            uri = declared.get(prefix) if sep else declared.get("")
            if uri is None:
                unresolved = True
            else:
                types.append((uri, name))
    scopes: tuple[str, ...] = ()
    match_by = MATCH_RFC3986
    scopes_el = probe.find(f"{{{WSD_NS}}}Scopes")
    if scopes_el is not None:
        scopes = tuple((scopes_el.text or "").split())
        match_by = scopes_el.get("MatchBy", MATCH_RFC3986).strip()
    return Probe(message_id, tuple(types), scopes, match_by, unresolved)


def _rfc3986_match(wanted: str, offered: str) -> bool:
    a, b = urllib.parse.urlsplit(wanted), urllib.parse.urlsplit(offered)
    if a.scheme.lower() != b.scheme.lower() or a.netloc.lower() != b.netloc.lower():
        return False
    wanted_segments = [s for s in a.path.split("/") if s]
    offered_segments = [s for s in b.path.split("/") if s]
    return offered_segments[: len(wanted_segments)] == wanted_segments


def probe_matches(probe: Probe, target: DiscoveryTarget) -> bool:
    """Whether `target` answers `probe`: every Type offered, every Scope matched under `MatchBy`."""
    if probe.unresolved_type or not set(probe.types) <= set(target.types):
        return False
    if probe.match_by == MATCH_RFC3986:
        match = _rfc3986_match
    elif probe.match_by == MATCH_STRCMP0:

        def match(wanted: str, offered: str) -> bool:
            return wanted == offered

    else:
        return False
    return all(any(match(wanted, offered) for offered in target.scopes) for wanted in probe.scopes)


def _probe_match_message(probe: Probe, target: DiscoveryTarget, *, instance_id: int, message_number: int) -> bytes:
    namespaces = {"env": ENV, "wsa": WSA_NS, "d": WSD_NS}
    prefixes: list[str] = []
    for n, (uri, name) in enumerate(target.types):
        prefix = next((p for p, u in namespaces.items() if u == uri), None)
        if prefix is None:
            prefix = "dn" if (uri, name) == NVT_TYPE else "tds" if (uri, name) == DEVICE_TYPE else f"t{n}"
            namespaces[prefix] = uri
        prefixes.append(f"{prefix}:{name}")
    header = [
        Node("wsa:MessageID", uuid.uuid4().urn),
        Node("wsa:To", WSA_ANONYMOUS),
        Node("wsa:Action", PROBE_MATCHES_ACTION),
        Node("d:AppSequence", attrs={"InstanceId": instance_id, "MessageNumber": message_number}),
    ]
    if probe.message_id:
        header.insert(1, Node("wsa:RelatesTo", probe.message_id))
    body = Node("d:ProbeMatches")
    match = body.add("d:ProbeMatch")
    match.add("wsa:EndpointReference").add("wsa:Address", target.endpoint)
    match.add("d:Types", " ".join(prefixes))
    match.add("d:Scopes", " ".join(target.scopes))
    match.add("d:XAddrs", " ".join(target.xaddrs))
    match.add("d:MetadataVersion", target.metadata_version)
    return serialize(body, header, namespaces)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, responder: DiscoveryResponder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (The selector loop's datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            for message in self.responder.answer(data):
                self.transport.sendto(message, addr)

    def error_received(self, exc: Exception) -> None:
        _log.warning("WS-Discovery socket error: %s", exc)


class DiscoveryResponder:
    """Answers WS-Discovery Probes for the targets `targets()` returns at the time of each Probe.

    `targets` is called on the event loop for every Probe; leave out cameras that are rebooting.
    """

    def __init__(
        self,
        targets: Callable[[], Iterable[DiscoveryTarget]],
        *,
        host: str = "0.0.0.0",
        port: int = WSD_PORT,
        join_multicast: bool = False,
        multicast_interface: str = "0.0.0.0",
    ) -> None:
        self._targets = targets
        self._host = host
        self._port = port
        self._join_multicast = join_multicast
        self._multicast_interface = multicast_interface
        self._transport: asyncio.DatagramTransport | None = None
        self._instance_id = int(time.time())
        self._message_numbers = itertools.count(1)
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (host, port); valid after `start()`."""
        if self._transport is None:
            raise RuntimeError("the responder is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            if self._join_multicast:
                membership = struct.pack(
                    "4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(self._multicast_interface)
                )
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
                # Replies are unicast, but never let a multicast datagram leave this host by accident.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        if self._transport is not None or self._closed:
            raise RuntimeError("the responder was already started")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self._socket())
        self._transport = transport
        _log.info("WS-Discovery responder on %s:%d", *self.address)

    def answer(self, datagram: bytes) -> list[bytes]:
        """The ProbeMatches messages (one per matching target) for a received datagram."""
        probe = parse_probe(datagram)
        if probe is None:
            return []
        return [
            _probe_match_message(
                probe, target, instance_id=self._instance_id, message_number=next(self._message_numbers)
            )
            for target in self._targets()
            if probe_matches(probe, target)
        ]

    async def close(self) -> None:
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)  # let the transport's connection_lost callback run

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
