"""The retention service's errors."""

from __future__ import annotations

from argus_core.errors import ArgusError


class RetentionError(ArgusError):
    """Base of the retention service's errors."""


class SweepBusy(RetentionError):
    """Another sweep (or reconcile) holds the retention lock: this one did not start."""


class LegalHoldUnavailable(RetentionError):
    """Legal holds were asked for (`ARGUS_RETENTION_LEGAL_HOLDS=on`) but the recordings bucket has no object lock."""
