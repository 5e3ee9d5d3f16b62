"""The recorder's errors: small, with the fields a caller needs."""

from __future__ import annotations

from argus_core.errors import ArgusError


class RecorderError(ArgusError):
    """Base of the recorder's errors."""


class BitstreamError(RecorderError):
    """An access unit or a codec configuration is not the H.264/H.265 framing it claims to be."""


class MuxError(RecorderError):
    """FFmpeg refused to mux a segment (its data is corrupt beyond what can be stored)."""


class SpoolError(RecorderError):
    """The local spool cannot take or give back an item (disk error)."""
