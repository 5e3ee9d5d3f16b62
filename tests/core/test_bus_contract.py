"""The bus contract, without a server: subjects, encoding, schema evolution."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from argus_core.bus import DecodeError, decode, encode
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.subjects import ALL_SUBJECTS, Subject, SubjectError
from tests.core.samples import SAMPLES, every_subject, sample


def test_every_message_type_has_a_sample_and_every_subject_is_unique() -> None:
    assert {subject.type for subject in ALL_SUBJECTS} <= SAMPLES.keys()
    assert len({subject.template for subject in ALL_SUBJECTS}) == len(ALL_SUBJECTS)


@pytest.mark.parametrize(("subject", "message"), every_subject(), ids=lambda v: getattr(v, "template", ""))
def test_encode_decode_round_trip(subject: Subject[Any], message: msgspec.Struct) -> None:
    assert decode(subject, encode(subject, message)) == message


def test_wrong_type_on_a_subject_is_refused() -> None:
    with pytest.raises(TypeError):
        encode(s.MEDIA, sample(m.CameraStatus))  # type: ignore[misc]  # the type error this contract exists for


def test_garbage_is_a_decode_error_naming_the_subject() -> None:
    with pytest.raises(DecodeError, match=r"argus\.camera\.status\.cam-1"):
        decode(s.CAMERA_STATUS, b'{"camera": 5}', "argus.camera.status.cam-1")


@pytest.mark.parametrize("token", ["a.b", "*", ">", "with space", ""])
def test_tokens_cannot_change_the_subject_shape(token: str) -> None:
    with pytest.raises(SubjectError):
        s.MEDIA.format(camera=token, stream="main")


def test_format_wildcard_parse() -> None:
    assert s.MEDIA.format(camera="c1", stream="sub") == "argus.media.c1.sub"
    assert s.MEDIA.wildcard(camera="c1") == "argus.media.c1.*"
    assert s.MEDIA.wildcard() == "argus.media.*.*"
    assert s.MEDIA.parse("argus.media.c1.sub") == {"camera": "c1", "stream": "sub"}
    with pytest.raises(SubjectError):
        s.MEDIA.format(camera="c1")


def test_schema_evolution_old_reader_ignores_new_fields_and_new_reader_defaults_missing_ones() -> None:
    class StatusV2(msgspec.Struct, frozen=True, kw_only=True):
        camera: str
        state: str
        at_ns: int
        ingest_pod: str = ""
        error: str = ""
        fps: float = 0.0
        bitrate_bps: float = 0.0
        last_keyframe_ns: int = 0
        clock_offset_ms: float | None = None
        codec: str | None = None
        width: int = 0
        height: int = 0
        tamper_score: float = 0.0  # a field a later version adds, with a default

    newer = msgspec.json.encode(StatusV2(camera="c", state="online", at_ns=5, tamper_score=0.9))
    assert decode(s.CAMERA_STATUS, newer) == m.CameraStatus(camera="c", state="online", at_ns=5)
    older = b'{"camera":"c","state":"offline","at_ns":6}'
    assert decode(s.CAMERA_STATUS, older).error == ""


def test_ptz_actions_are_a_tagged_union() -> None:
    command = sample(m.PtzCommand)
    wire = msgspec.json.decode(encode(s.PTZ_COMMAND, command))
    assert wire["action"]["type"] == "absolute"
    match decode(s.PTZ_COMMAND, encode(s.PTZ_COMMAND, command)).action:
        case m.PtzAbsoluteMove(pan=pan):
            assert pan == 0.5
        case other:
            pytest.fail(f"decoded {other!r}")
