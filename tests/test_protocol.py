"""Protocol v1 as data: bounds on what clients send, codes the server answers with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hubbub.protocol import (
    ERROR_CLOSE_CODES,
    MAX_SEQ,
    RETRYABLE_CODES,
    Ended,
    Ready,
    Start,
    client_message,
    close_code,
    describe,
)


def test_a_plain_start_and_a_resume_parse():
    assert client_message.validate_json('{"type": "start"}') == Start(type="start")
    resume = client_message.validate_json(
        '{"type": "start", "session_id": "ab-1_x", "resume_token": "'
        + "t" * 32
        + '", "last_seq": 7, "language": "de", "max_speakers": 4}'
    )
    assert resume.session_id == "ab-1_x" and resume.last_seq == 7 and resume.language == "de"


@pytest.mark.parametrize(
    "fields",
    [
        {"last_seq": MAX_SEQ + 1},
        {"last_seq": -1},
        {"session_id": ""},
        {"session_id": "a b"},
        {"session_id": "x" * 65},
        {"resume_token": "short"},
        {"resume_token": "x" * 129},
        {"language": "english"},
        {"language": "EN"},
        {"max_speakers": 0},
        {"max_speakers": 33},
        {"sample_rate": 7999},
        {"sample_rate": 48001},
        {"channels": 3},
        {"encoding": "opus"},
    ],
)
def test_every_start_field_is_bounded(fields):
    with pytest.raises(ValidationError):
        Start(type="start", **fields)


def test_codes_are_data_the_page_can_fetch():
    codes = describe()
    assert codes["protocol"] == 1
    assert set(codes["errors"]) == set(ERROR_CLOSE_CODES)
    assert set(ERROR_CLOSE_CODES) >= RETRYABLE_CODES
    assert codes["errors"]["server_full"] == {"close": 1013, "retryable": True}
    assert codes["errors"]["taken_over"] == {"close": 1008, "retryable": False}
    assert close_code("no such code") == 1011


def test_server_messages_say_what_a_resume_needs():
    ready = Ready(session_id="s", engine="cpu", sample_rate=16000, limits=_limits())
    assert ready.resume_token is None and ready.resume_from_s == 0.0
    assert Ended(session_id="s", seq=1, audio_processed_s=1.0, segments=0).reason == "stop"


def _limits():
    from hubbub.protocol import Limits

    return Limits(max_frame_bytes=1, max_buffered_s=1, max_session_s=1, idle_timeout_s=1)
