"""Encode and decode bus messages at the edges, with encoders made once and typed decoders cached per type."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec

from argus_core.bus.subjects import Encoding, Subject

M = TypeVar("M", bound=msgspec.Struct)

_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()


class DecodeError(ValueError):
    """A message on a subject is not the type the subject carries."""

    def __init__(self, subject: str, problem: str) -> None:
        super().__init__(f"bad message on {subject}: {problem}")
        self.subject = subject
        self.problem = problem


@functools.cache
def _decoder(tp: type[Any], encoding: Encoding) -> msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]:
    if encoding == "json":
        return msgspec.json.Decoder(tp)
    return msgspec.msgpack.Decoder(tp)


def encode(subject: Subject[M], message: M) -> bytes:
    if not isinstance(message, subject.type):
        raise TypeError(f"{subject.template} carries {subject.type.__name__}, not {type(message).__name__}")
    if subject.encoding == "json":
        return _JSON.encode(message)
    return _MSGPACK.encode(message)


def decode(subject: Subject[M], data: bytes, concrete: str = "") -> M:
    try:
        result: M = _decoder(subject.type, subject.encoding).decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(concrete or subject.template, str(exc)) from exc
    return result
