"""Object keys: deterministic, so that storing the same segment twice (a retry, a replacement recorder) overwrites.

A media segment's key is its camera, its start (UTC, to the millisecond) and a short tag of the ingest session and
first packet it holds: `cam-01/2026/11/21/02/14/05.120Z-3fa2c1.m4s` for the main stream, `cam-01/sub/...` for
another. The tag keeps two different segments apart when a clock steps back onto a start already used. An init
segment is keyed by a hash of the codec configuration it describes: `cam-01/init/9c1d0e2f4a6b8c0d.mp4`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from argus_core.bus.messages import CodecConfig

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(ns: int) -> datetime:
    """A UTC datetime from nanoseconds since the epoch, truncated to the millisecond (what the index keeps)."""
    return _EPOCH + timedelta(milliseconds=ns // 1_000_000)


def ns_of(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _prefix(camera: str, stream: str) -> str:
    return camera if stream == "main" else f"{camera}/{stream}"


def segment_key(camera: str, stream: str, start_ns: int, session: str, first_seq: int) -> str:
    t = utc(start_ns)
    tag = hashlib.blake2b(f"{session}:{first_seq}".encode(), digest_size=3).hexdigest()
    return f"{_prefix(camera, stream)}/{t:%Y/%m/%d/%H/%M/%S}.{t.microsecond // 1000:03d}Z-{tag}.m4s"


def config_hash(config: CodecConfig) -> str:
    h = hashlib.sha256()
    h.update(f"{config.codec}|{config.width}|{config.height}|{config.time_base_num}|{config.time_base_den}|".encode())
    h.update(config.extradata)
    return h.hexdigest()[:16]


def init_key(camera: str, stream: str, config: CodecConfig) -> str:
    return f"{_prefix(camera, stream)}/init/{config_hash(config)}.mp4"
