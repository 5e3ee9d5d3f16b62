"""The recorder's errors: small, with the fields a caller needs."""

from __future__ import annotations

from argus_core.bitstream import BitstreamError as BitstreamError
from argus_core.errors import ArgusError


class RecorderError(ArgusError):
    """Base of the recorder's errors."""


class MuxError(RecorderError):
    """FFmpeg refused to mux a segment (its data is corrupt beyond what can be stored)."""


class SpoolError(RecorderError):
    """The local spool cannot take or give back an item (disk error)."""
