"""Time in the retention service: a clock that tests control, and conversions between it and Postgres' times."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], int]  # nanoseconds since the epoch, UTC

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MAX_SEGMENT = timedelta(minutes=10)  # the recording index's CHECK: no segment is longer


def system_clock() -> int:
    return time.time_ns()


def utc(ns: int) -> datetime:
    """A UTC datetime from nanoseconds since the epoch (microsecond precision, as Postgres keeps)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def ns_of(when: datetime) -> int:
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def iso(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")
