"""`ARGUS_PLAYBACK_*`: how playback delivers footage and the limits it keeps."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Delivery = Literal["proxy", "presigned"]

DAY_S = 86_400.0


class PlaybackConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Playback settings, nested in the api's `Config` as `playback` (so `ARGUS_PLAYBACK_DELIVERY`, ...).

    `delivery` says where players fetch HLS segments from: `proxy` streams them through the api (with HTTP range
    requests), for deployments whose clients cannot reach the object store (a partner agency); `presigned` hands
    out presigned S3 URLs (the api only writes playlists), signed for `presign_endpoint` when clients reach the
    store by another name than the api does. A caller may always ask for `proxy`.
    """

    delivery: Delivery = "proxy"
    # Key of the HMAC that signs proxied segment URLs (any length, at least 16 characters). Empty: a random key per
    # process, which is fine for one api replica; several replicas behind one address must share a key.
    url_key: Annotated[str, msgspec.Meta(pattern=r"^$|^.{16,}$")] = ""
    url_ttl_s: Annotated[float, msgspec.Meta(ge=60, le=7 * DAY_S)] = 6 * 3600.0
    presign_endpoint: str = ""  # host:port as clients reach S3; empty: the api's own S3 endpoint
    presign_secure: bool = False
    # Largest ranges: a timeline (a month and a bit), a playlist (a day), a clip.
    timeline_max_s: Annotated[float, msgspec.Meta(gt=0)] = 35 * DAY_S
    playlist_max_s: Annotated[float, msgspec.Meta(gt=0)] = DAY_S
    clip_max_s: Annotated[float, msgspec.Meta(gt=0)] = 4 * 3600.0
    # Segments closer than this are one recorded span (the recorder writes contiguous segments end to start).
    join_tolerance_ms: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 100
    clip_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2  # clips remuxed at once; more wait, then 503
    clip_queue: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 8
    init_cache: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 512  # init segments kept in memory
