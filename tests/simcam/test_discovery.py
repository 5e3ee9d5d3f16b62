"""WS-Discovery: Probes sent unicast to a responder on a random loopback port."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from argus_simcam.discovery import DiscoveryResponder, DiscoveryTarget, parse_probe
from tests.simcam.onvif_support import make_camera, no_leaks

D = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
ENV = "http://www.w3.org/2003/05/soap-envelope"
NSMAP = {"env": ENV, "d": D, "a": A}


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    async with no_leaks():
        yield


def probe(types: str = "dn:NetworkVideoTransmitter", scopes: str = "", extra_ns: str = "") -> tuple[str, bytes]:
    message_id = uuid.uuid4().urn
    scopes_el = f"<d:Scopes>{scopes}</d:Scopes>" if scopes else ""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{ENV}" xmlns:a="{A}" xmlns:d="{D}" '
        f'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" {extra_ns}><s:Header>'
        f"<a:Action s:mustUnderstand='1'>{D}/Probe</a:Action><a:MessageID>{message_id}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{A}/role/anonymous</a:Address></a:ReplyTo>"
        "<a:To s:mustUnderstand='1'>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>"
        f"<s:Body><d:Probe><d:Types>{types}</d:Types>{scopes_el}</d:Probe></s:Body></s:Envelope>"
    )
    return message_id, xml.encode()


class Prober(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=100)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


@asynccontextmanager
async def prober() -> AsyncIterator[tuple[asyncio.DatagramTransport, Prober]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Prober, local_addr=("127.0.0.1", 0))
    try:
        yield transport, protocol
    finally:
        transport.close()
        await asyncio.sleep(0)


def targets() -> list[DiscoveryTarget]:
    east, west = make_camera("East gate"), make_camera("West gate", location="city/park")
    return [
        DiscoveryTarget.for_camera(east, ["http://127.0.0.1:8001/onvif/device_service"]),
        DiscoveryTarget.for_camera(west, ["http://127.0.0.1:8002/onvif/device_service"]),
    ]


async def answers(protocol: Prober, message_id: str) -> list[ET.Element]:
    """ProbeMatch elements answering `message_id`; replies to earlier probes are skipped, which proves
    (datagrams on loopback keep their order) that those probes got no more answers than already read."""
    matches: list[ET.Element] = []
    while True:
        try:
            # The first answer may be slow on a loaded machine; once answers flow, a pause means the end.
            data, _ = await asyncio.wait_for(protocol.received.get(), timeout=0.5 if matches else 5.0)
        except TimeoutError:
            return matches
        root = ET.fromstring(data)
        if root.findtext("env:Header/a:RelatesTo", None, NSMAP) != message_id:
            raise AssertionError(f"an answer to another probe: {data!r}")
        assert root.findtext("env:Header/a:Action", None, NSMAP) == f"{D}/ProbeMatches"
        matches.extend(root.iterfind("env:Body/d:ProbeMatches/d:ProbeMatch", NSMAP))


async def test_probe_gets_a_match_per_camera_unicast_to_the_prober() -> None:
    expected = targets()
    async with (
        DiscoveryResponder(lambda: expected, host="127.0.0.1", port=0) as responder,
        prober() as (
            transport,
            protocol,
        ),
    ):
        message_id, data = probe()
        transport.sendto(data, responder.address)
        first, addr = await asyncio.wait_for(protocol.received.get(), timeout=5)
        assert addr == responder.address
        protocol.received.put_nowait((first, addr))
        matches = await answers(protocol, message_id)
        assert len(matches) == 2
        by_endpoint = {m.findtext("a:EndpointReference/a:Address", None, NSMAP): m for m in matches}
        for target in expected:
            match = by_endpoint[target.endpoint]
            assert (match.findtext("d:XAddrs", None, NSMAP) or "").split() == list(target.xaddrs)
            assert (match.findtext("d:Scopes", None, NSMAP) or "").split() == list(target.scopes)
            assert match.findtext("d:Types", None, NSMAP) == "dn:NetworkVideoTransmitter tds:Device"


async def test_probes_that_match_nothing_get_nothing() -> None:
    async with (
        DiscoveryResponder(targets, host="127.0.0.1", port=0) as responder,
        prober() as (
            transport,
            protocol,
        ),
    ):
        printer_ns = 'xmlns:wprt="http://schemas.microsoft.com/windows/2006/08/wdp/print"'
        silent = [
            probe("wprt:PrintDeviceType", extra_ns=printer_ns)[1],
            probe("undeclared:NetworkVideoTransmitter")[1],
            probe(scopes="onvif://www.onvif.org/name/Somewhere")[1],
            probe(scopes="onvif://www.onvif.org/location/cit")[1],  # scopes match by whole segments
            b"<not xml",
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>',
            probe()[1].replace(b"d:Probe>", b"d:Resolve>"),
        ]
        for data in silent:
            transport.sendto(data, responder.address)
        # Then a probe that matches one camera by scope: only its answer arrives.
        message_id, data = probe(scopes="onvif://www.onvif.org/location/city/park")
        transport.sendto(data, responder.address)
        matches = await answers(protocol, message_id)
        assert [m.findtext("d:XAddrs", None, NSMAP) for m in matches] == ["http://127.0.0.1:8002/onvif/device_service"]


async def test_type_only_probe_and_device_type() -> None:
    async with (
        DiscoveryResponder(targets, host="127.0.0.1", port=0) as responder,
        prober() as (
            transport,
            protocol,
        ),
    ):
        message_id, data = probe(types="tds:Device", extra_ns='xmlns:tds="http://www.onvif.org/ver10/device/wsdl"')
        transport.sendto(data, responder.address)
        assert len(await answers(protocol, message_id)) == 2
        message_id, data = probe(types="", scopes="onvif://www.onvif.org/name/East%20gate")
        transport.sendto(data, responder.address)
        assert len(await answers(protocol, message_id)) == 1


def test_probe_parsing_resolves_prefixes_where_declared() -> None:
    data = (
        f'<e:Envelope xmlns:e="{ENV}" xmlns:d="{D}"><e:Body><d:Probe>'
        '<d:Types xmlns:x="http://www.onvif.org/ver10/network/wsdl">x:NetworkVideoTransmitter</d:Types>'
        '<d:Scopes MatchBy="http://schemas.xmlsoap.org/ws/2005/04/discovery/strcmp0">a b</d:Scopes>'
        "</d:Probe></e:Body></e:Envelope>"
    ).encode()
    parsed = parse_probe(data)
    assert parsed is not None
    assert parsed.types == (("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter"),)
    assert parsed.scopes == ("a", "b")
    assert parsed.message_id is None
    assert not parsed.unresolved_type


async def test_start_and_close_twice() -> None:
    responder = DiscoveryResponder(targets, host="127.0.0.1", port=0)
    await responder.start()
    host, port = responder.address
    assert host == "127.0.0.1"
    assert port > 0
    await responder.close()
    await responder.close()
    with pytest.raises(RuntimeError):
        _ = responder.address
