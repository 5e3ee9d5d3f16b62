"""RTP packetisation of H.264 (RFC 6184, packetization-mode 1) and H.265 (RFC 7798) access units.

NAL units that fit are aggregated (STAP-A / AP) up to the payload size, larger ones are fragmented (FU-A / FU);
the marker bit is set on the last packet of an access unit; timestamps are 90 kHz. Payload lists can be made once
and shared (`AccessUnit.rtp_tail`): a pre-encoded picture's encoder slices are cut into payloads once per clip,
and each camera only adds its own 12-byte headers (and the 4-byte interleaved framing for RTSP over TCP).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from argus_simcam.stream import AccessUnit, Codec

__all__ = [
    "DEFAULT_MTU",
    "RTP_HEADER_SIZE",
    "Codec",
    "RtpPacketizer",
    "h264_payloads",
    "h265_payloads",
    "max_payload_for",
    "payloads_for",
]

RTP_HEADER_SIZE: Final = 12
DEFAULT_MTU: Final = 1400  # whole RTP packet, header included
_STAP_A: Final = 24
_FU_A: Final = 28
_HEVC_AP: Final = 48
_HEVC_FU: Final = 49

_RTP = struct.Struct("!BBHII")
_INTERLEAVED_RTP = struct.Struct("!BBHBBHII")


def max_payload_for(mtu: int) -> int:
    return mtu - RTP_HEADER_SIZE


def h264_payloads(nals: Sequence[bytes], max_payload: int) -> list[bytes]:
    """RTP payloads for H.264 NAL units: single NAL, STAP-A for runs of small ones, FU-A for large ones."""
    out: list[bytes] = []
    group: list[bytes] = []
    size = 1

    def flush() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            header = (max(n[0] & 0x60 for n in group)) | (0x80 if any(n[0] & 0x80 for n in group) else 0)
            parts = [bytes((header | _STAP_A,))]
            for n in group:
                parts.append(len(n).to_bytes(2, "big"))
                parts.append(n)
            out.append(b"".join(parts))
        group.clear()

    for nal in nals:
        if len(nal) > max_payload:
            flush()
            size = 1
            indicator = (nal[0] & 0xE0) | _FU_A
            kind = nal[0] & 0x1F
            chunk = max_payload - 2
            body = memoryview(nal)[1:]
            for start in range(0, len(body), chunk):
                fu = kind
                if start == 0:
                    fu |= 0x80
                if start + chunk >= len(body):
                    fu |= 0x40
                out.append(bytes((indicator, fu)) + body[start : start + chunk])
            continue
        if group and size + 2 + len(nal) > max_payload:
            flush()
            size = 1
        group.append(nal)
        size += 2 + len(nal)
    flush()
    return out


def h265_payloads(nals: Sequence[bytes], max_payload: int) -> list[bytes]:
    """RTP payloads for H.265 NAL units: single NAL, AP for runs of small ones, FU for large ones."""
    out: list[bytes] = []
    group: list[bytes] = []
    size = 2

    def flush() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            forbidden = 0x80 if any(n[0] & 0x80 for n in group) else 0
            layer = min(((n[0] & 1) << 5) | (n[1] >> 3) for n in group)
            tid = min(n[1] & 7 for n in group)
            parts = [bytes((forbidden | (_HEVC_AP << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid))]
            for n in group:
                parts.append(len(n).to_bytes(2, "big"))
                parts.append(n)
            out.append(b"".join(parts))
        group.clear()

    for nal in nals:
        if len(nal) > max_payload:
            flush()
            size = 2
            head = bytes(((nal[0] & 0x81) | (_HEVC_FU << 1), nal[1]))
            kind = (nal[0] >> 1) & 0x3F
            chunk = max_payload - 3
            body = memoryview(nal)[2:]
            for start in range(0, len(body), chunk):
                fu = kind
                if start == 0:
                    fu |= 0x80
                if start + chunk >= len(body):
                    fu |= 0x40
                out.append(head + bytes((fu,)) + body[start : start + chunk])
            continue
        if group and size + 2 + len(nal) > max_payload:
            flush()
            size = 2
        group.append(nal)
        size += 2 + len(nal)
    flush()
    return out


def payloads_for(codec: Codec, nals: Sequence[bytes], max_payload: int) -> list[bytes]:
    return h264_payloads(nals, max_payload) if codec == "h264" else h265_payloads(nals, max_payload)


@dataclass
class RtpPacketizer:
    """One RTP sender (one SSRC): turns access units into packets, counting packets and octets for RTCP."""

    codec: Codec
    ssrc: int
    seq: int
    timestamp_offset: int
    payload_type: int = 96
    mtu: int = DEFAULT_MTU
    packet_count: int = 0
    octet_count: int = 0

    def rtp_timestamp(self, pts: int) -> int:
        return (pts + self.timestamp_offset) & 0xFFFFFFFF

    def payloads(self, au: AccessUnit) -> list[bytes]:
        max_payload = max_payload_for(self.mtu)
        tail = au.rtp_tail
        if tail is not None and tail.max_payload == max_payload:
            head = payloads_for(self.codec, au.nals[: tail.start], max_payload) if tail.start else []
            return head + list(tail.payloads)
        return payloads_for(self.codec, au.nals, max_payload)

    def packets(self, au: AccessUnit) -> list[bytes]:
        """The RTP packets of `au`, for UDP."""
        payloads = self.payloads(au)
        ts = self.rtp_timestamp(au.pts)
        out: list[bytes] = []
        last = len(payloads) - 1
        seq = self.seq
        for i, payload in enumerate(payloads):
            mark = 0x80 if i == last else 0
            out.append(_RTP.pack(0x80, mark | self.payload_type, seq, ts, self.ssrc) + payload)
            seq = (seq + 1) & 0xFFFF
            self.octet_count += len(payload)
        self.seq = seq
        self.packet_count += len(out)
        return out

    def interleaved(self, au: AccessUnit, channel: int) -> bytes:
        """The RTP packets of `au` framed for RTSP over TCP (RFC 2326 10.12), as one buffer."""
        payloads = self.payloads(au)
        ts = self.rtp_timestamp(au.pts)
        parts: list[bytes] = []
        last = len(payloads) - 1
        seq = self.seq
        pt = self.payload_type
        ssrc = self.ssrc
        octets = 0
        pack = _INTERLEAVED_RTP.pack
        for i, payload in enumerate(payloads):
            size = len(payload)
            parts.append(
                pack(0x24, channel, size + RTP_HEADER_SIZE, 0x80, (0x80 if i == last else 0) | pt, seq, ts, ssrc)
            )
            parts.append(payload)
            seq = (seq + 1) & 0xFFFF
            octets += size
        self.seq = seq
        self.packet_count += len(payloads)
        self.octet_count += octets
        return b"".join(parts)
