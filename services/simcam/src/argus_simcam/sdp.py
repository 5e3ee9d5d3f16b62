"""SDP (RFC 4566) session descriptions for DESCRIBE: one H.264 (RFC 6184) or H.265 (RFC 7798) video track."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from argus_simcam import h264, h265
from argus_simcam.stream import Codec

__all__ = ["TRACK_CONTROL", "build_sdp", "fmtp"]

TRACK_CONTROL = "trackID=0"
PAYLOAD_TYPE = 96


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def fmtp(codec: Codec, parameter_sets: Sequence[bytes]) -> str:
    """The `a=fmtp` parameters for the stream's parameter sets (SPS/PPS, or VPS/SPS/PPS)."""
    if codec == "h264":
        sps = [p for p in parameter_sets if h264.nal_type(p) == h264.NAL_SPS]
        pps = [p for p in parameter_sets if h264.nal_type(p) == h264.NAL_PPS]
        parts = ["packetization-mode=1"]
        if sps:
            parts.append(f"profile-level-id={sps[0][1:4].hex()}")
        if sps or pps:
            parts.append("sprop-parameter-sets=" + ",".join(_b64(p) for p in (*sps, *pps)))
        return ";".join(parts)
    named = {h265.NAL_VPS: "sprop-vps", h265.NAL_SPS: "sprop-sps", h265.NAL_PPS: "sprop-pps"}
    return ";".join(f"{named[h265.nal_type(p)]}={_b64(p)}" for p in parameter_sets if h265.nal_type(p) in named)


def build_sdp(
    *,
    codec: Codec,
    parameter_sets: Sequence[bytes],
    session_id: int,
    session_version: int,
    host: str,
    title: str,
    fps: int,
) -> str:
    """A complete SDP with one video track whose control URL is `TRACK_CONTROL` (relative to Content-Base)."""
    encoding = "H264" if codec == "h264" else "H265"
    lines = [
        "v=0",
        f"o=- {session_id} {session_version} IN IP4 {host}",
        f"s={title or 'simcam'}",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=control:*",
        "a=range:npt=now-",
        f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
        f"a=rtpmap:{PAYLOAD_TYPE} {encoding}/90000",
        f"a=fmtp:{PAYLOAD_TYPE} {fmtp(codec, parameter_sets)}",
        f"a=framerate:{fps}",
        f"a=control:{TRACK_CONTROL}",
        "a=recvonly",
    ]
    return "\r\n".join(lines) + "\r\n"
