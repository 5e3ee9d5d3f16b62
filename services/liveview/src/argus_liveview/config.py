"""Configuration of the liveview service, read from ARGUS_* environment variables.

`ARGUS_LIVEVIEW_*` (`LiveviewSettings`) tunes sessions, fan-out and ICE; `ARGUS_TOKENS_*` names the token issuer's
public keys. ICE for deployments:

- `ARGUS_LIVEVIEW_ICE_HOSTS`: the local addresses to gather host candidates on (comma separated). Empty: every
  interface address, loopback included (aioice on its own leaves loopback out).
- `ARGUS_LIVEVIEW_ICE_ADVERTISE`: addresses announced as extra host candidates with the port of each bound
  non-loopback socket of the same family: the public address of a pod behind a 1:1 NAT (MediaMTX's
  `webrtcAdditionalHosts`, pion's NAT1To1IPs).
- `ARGUS_LIVEVIEW_ICE_PORT_MIN`/`_MAX`: the UDP port range of host candidates (0/0: ephemeral ports).
- `ARGUS_LIVEVIEW_ICE_SERVERS`: STUN and TURN URLs (`stun:host:port`, `turn:host:port?transport=udp`), with
  `ARGUS_LIVEVIEW_TURN_USERNAME`/`_PASSWORD` for TURN. aiortc uses the first STUN and the first TURN server.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec

from argus_core.identity import TokenConfig
from argus_core.runtime import RuntimeConfig

Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
UdpPort = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class LiveviewSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_LIVEVIEW_*`: sessions, the per-camera fan-out and ICE."""

    # Sessions: at most this many at once (a POST past it gets 503); a peer must connect within connect_timeout_s;
    # a viewer that sends no RTCP report for viewer_timeout_s has stopped reading and is cut off.
    max_sessions: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    connect_timeout_s: Seconds = 15.0
    viewer_timeout_s: Seconds = 10.0
    # Fan-out: frames waiting per viewer (a viewer further behind skips to the next keyframe), frames and bytes
    # of the current GOP kept per watched camera, and how long a camera stays subscribed after its last viewer.
    viewer_queue_frames: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 50
    gop_max_frames: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 300
    gop_max_bytes: Annotated[int, msgspec.Meta(ge=65_536, le=256 * 1024 * 1024)] = 16 * 1024 * 1024
    idle_grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # Ingest publishes a camera stream live only while a live view pod demands it: a watched camera's demand is
    # renewed every demand_interval_s and holds for demand_ttl_s (more than two intervals, so that one lost renewal
    # does not stop the stream). The first demand asks the pulling ingest pod for the current GOP so far and waits
    # up to catchup_timeout_s for it, so that the first viewer starts at once (0: do not ask; it waits for the next
    # live keyframe).
    catchup_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 1.0
    demand_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    demand_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    # Frames that reach a viewer late (its GOP start, or after a stall) are sent at up to this many times real
    # time, their timestamps compressed, so that the player catches up to live instead of lagging by a GOP.
    catchup_speed: Annotated[float, msgspec.Meta(ge=1, le=100)] = 8.0
    catchup_after_ms: Annotated[float, msgspec.Meta(ge=1, le=10_000)] = 80.0
    # Filler data NAL units (the padding of constant bit rate cameras) carry no picture: leave them out of RTP.
    strip_filler: bool = True
    # Audit: how long a session start may wait for its event to be stored before the session is refused.
    audit_timeout_s: Seconds = 5.0
    # ICE (see the module docstring).
    ice_hosts: tuple[str, ...] = ()
    ice_advertise: tuple[str, ...] = ()
    ice_port_min: UdpPort = 0
    ice_port_max: UdpPort = 0
    ice_servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_password: str = ""

    def __post_init__(self) -> None:
        for name in ("ice_hosts", "ice_advertise"):
            for value in getattr(self, name):
                try:
                    ipaddress.ip_address(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {value!r} is not an IP address") from exc
        if (self.ice_port_min == 0) != (self.ice_port_max == 0):
            raise ValueError("ice_port_min and ice_port_max are set together (0 and 0: ephemeral ports)")
        if self.ice_port_min > self.ice_port_max:
            raise ValueError("ice_port_min is above ice_port_max")
        for url in self.ice_servers:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"ice_servers: {url!r} is not a stun: or turn: URL")
        if self.demand_ttl_s <= 2 * self.demand_interval_s:
            raise ValueError(
                f"demand_ttl_s ({self.demand_ttl_s:g}) must be more than twice demand_interval_s "
                f"({self.demand_interval_s:g})"
            )


class Config(RuntimeConfig, frozen=True, kw_only=True):
    tokens: TokenConfig
    liveview: LiveviewSettings = msgspec.field(default_factory=LiveviewSettings)
