"""RTCP (RFC 3550): sender reports with SDES CNAME, BYE, and a parser for compound packets.

A sender report maps an RTP timestamp to the NTP wall-clock time of that frame's capture by the camera's clock
(`AccessUnit.capture_ns`), so a receiver can recover every frame's capture time and a clock-skew fault shows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "NTP_UNIX_OFFSET",
    "Bye",
    "ReceiverReport",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "bye",
    "ntp_from_ns",
    "ns_from_ntp",
    "parse_rtcp",
    "sender_report",
]

NTP_UNIX_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
PT_SR: Final = 200
PT_RR: Final = 201
PT_SDES: Final = 202
PT_BYE: Final = 203
_NS: Final = 1_000_000_000
_SR = struct.Struct("!BBHIIIIII")


class RtcpError(ValueError):
    """A malformed RTCP packet."""


def ntp_from_ns(unix_ns: int) -> int:
    """64-bit NTP timestamp (seconds since 1900 << 32 | fraction) for Unix time in nanoseconds."""
    seconds, rest = divmod(unix_ns, _NS)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | ((rest << 32) // _NS)


def ns_from_ntp(ntp: int) -> int:
    """Unix time in nanoseconds for a 64-bit NTP timestamp (rounded to the nearest nanosecond)."""
    seconds, fraction = ntp >> 32, ntp & 0xFFFFFFFF
    return (seconds - NTP_UNIX_OFFSET) * _NS + ((fraction * _NS + (1 << 31)) >> 32)


def _sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    chunk = struct.pack("!I", ssrc) + bytes((1, len(text))) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, PT_SDES, len(chunk) // 4) + chunk


def sender_report(ssrc: int, capture_ns: int, rtp_timestamp: int, packets: int, octets: int, cname: str) -> bytes:
    """A compound RTCP packet: SR (no report blocks) + SDES CNAME."""
    ntp = ntp_from_ns(capture_ns)
    sr = _SR.pack(
        0x80,
        PT_SR,
        6,
        ssrc,
        ntp >> 32,
        ntp & 0xFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    return sr + _sdes_cname(ssrc, cname)


def bye(ssrc: int, cname: str) -> bytes:
    """A compound RTCP packet: empty RR + SDES CNAME + BYE."""
    rr = struct.pack("!BBHI", 0x80, PT_RR, 1, ssrc)
    return rr + _sdes_cname(ssrc, cname) + struct.pack("!BBHI", 0x81, PT_BYE, 1, ssrc)


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int

    @property
    def unix_ns(self) -> int:
        return ns_from_ntp(self.ntp)


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int
    report_count: int


@dataclass(frozen=True)
class Bye:
    ssrcs: tuple[int, ...]


RtcpPacket = SenderReport | ReceiverReport | Bye


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """The SR, RR and BYE packets of a compound RTCP packet (other types are skipped)."""
    out: list[RtcpPacket] = []
    pos = 0
    while pos + 4 <= len(data):
        first, pt, length = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != 2:
            raise RtcpError("not RTCP version 2")
        end = pos + 4 * (length + 1)
        if end > len(data):
            raise RtcpError("truncated RTCP packet")
        count = first & 0x1F
        if pt == PT_SR and length >= 6:
            _, _, _, ssrc, hi, lo, ts, packets, octets = _SR.unpack_from(data, pos)
            out.append(SenderReport(ssrc, (hi << 32) | lo, ts, packets, octets))
        elif pt == PT_RR and length >= 1:
            out.append(ReceiverReport(struct.unpack_from("!I", data, pos + 4)[0], count))
        elif pt == PT_BYE:
            out.append(Bye(tuple(struct.unpack_from(f"!{count}I", data, pos + 4))))
        pos = end
    return out
