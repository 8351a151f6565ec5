"""Streaming protocol v1: the wire messages between any client and the transcriber.

Client -> server: a JSON ``start``, then binary ``pcm_s16le`` frames of any size, then
JSON control messages (``finalize``, ``stop``, ``ping``). Server -> client: ``ready``,
``transcript`` updates with a gap-free ``seq``, ``pong``, ``error`` (then a close) and
``ended``. docs/protocol.md describes it for client authors.

Every field an outsider sends is bounded here, once: a value out of range is a
``bad_message`` (or ``unsupported_audio``), never an exception deeper in the server.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from hubbub.transcript import Segment

PROTOCOL_VERSION = 1

MAX_SPEAKERS = 32  # the most speaker labels a session may ask for
MAX_SEQ = 2**31 - 1  # update numbers: far beyond any session, exact in JSON and SQLite
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RESUME_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"  # an ISO 639 code, as Whisper names languages

SpeakerCap = Annotated[int, Field(ge=1, le=MAX_SPEAKERS)]
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
ResumeToken = Annotated[str, Field(pattern=RESUME_TOKEN_PATTERN)]
Language = Annotated[str, Field(pattern=LANGUAGE_PATTERN)]


# -- client -> server -------------------------------------------------------------


class Start(BaseModel):
    type: Literal["start"]
    sample_rate: int = Field(16_000, ge=8_000, le=48_000)
    encoding: Literal["pcm_s16le"] = "pcm_s16le"
    channels: int = Field(1, ge=1, le=2)
    language: Language | None = None
    max_speakers: SpeakerCap | None = None
    # A resume names its session and presents the token its ``ready`` gave (an id alone
    # is not enough); ``last_seq`` is the last update the client received.
    session_id: SessionId | None = None
    resume_token: ResumeToken | None = None
    last_seq: int | None = Field(None, ge=0, le=MAX_SEQ)
    # False for audio sent faster than real time (an upload): it is not counted as lag
    # when deciding whether to admit new live sessions.
    realtime: bool = True


class Finalize(BaseModel):
    type: Literal["finalize"]


class Stop(BaseModel):
    type: Literal["stop"]


class Ping(BaseModel):
    type: Literal["ping"]


ClientMessage = Annotated[Start | Finalize | Stop | Ping, Field(discriminator="type")]
client_message = TypeAdapter(ClientMessage)


# -- server -> client -------------------------------------------------------------


class Limits(BaseModel):
    max_frame_bytes: int
    max_buffered_s: float
    max_session_s: float
    idle_timeout_s: float


class Ready(BaseModel):
    type: Literal["ready"] = "ready"
    protocol: int = PROTOCOL_VERSION
    session_id: str
    engine: str
    sample_rate: int
    resumed: bool = False
    # Only in the ``ready`` of a new session: the secret a resume must present. Keep it.
    resume_token: str | None = None
    # Where the server wants the client's audio to continue from, in seconds of the
    # session: 0 for a new session; on a resume, the audio it already holds, or after a
    # restart how far its stored finals reach (send what you kept from there on again).
    resume_from_s: float = 0.0
    limits: Limits


class TranscriptUpdate(BaseModel):
    """New final segments (immutable) and the whole current partial tail (replaces)."""

    type: Literal["transcript"] = "transcript"
    seq: int
    finals: list[Segment] = Field(default_factory=list)
    partials: list[Segment] = Field(default_factory=list)
    audio_received_s: float
    audio_processed_s: float
    # Audio before this point is settled: covered by stored finals, or silence. A client
    # that wants to survive a server restart keeps its audio from here on.
    audio_committed_s: float = 0.0
    lag_s: float


class SpeakersUpdate(BaseModel):
    """A second look at the speakers revised finals already sent: ``relabel`` maps their
    ids to their speaker now. A final's text and times never change, only its speaker.
    ``seq`` is that of the last ``transcript`` update: this message takes no number of its
    own, so a client that ignores it sees no gap."""

    type: Literal["speakers"] = "speakers"
    seq: int
    relabel: dict[str, str]


class Pong(BaseModel):
    type: Literal["pong"] = "pong"


class ErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str


class Ended(BaseModel):
    type: Literal["ended"] = "ended"
    session_id: str
    seq: int
    audio_processed_s: float
    segments: int
    # "stop" when the client asked; "shutting_down" when the server is going away: every
    # final is out, and the session may be resumed once the server is back.
    reason: Literal["stop", "shutting_down"] = "stop"


# -- close codes and error codes -----------------------------------------------------

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
# Close codes that say "the connection broke", not "the peer chose to close".
ABNORMAL_CLOSE_CODES = frozenset({1005, 1006, 1015})

# Machine codes the web app's relay adds for its upstream.
TRANSCRIBER_UNAVAILABLE = "transcriber_unavailable"  # cannot connect
TRANSCRIBER_LOST = "transcriber_lost"  # the upstream dropped and could not be resumed
TRANSCRIBER_TIMEOUT = "transcriber_timeout"  # the upstream did not answer ``start``

ERROR_CLOSE_CODES: dict[str, int] = {
    "bad_message": CLOSE_PROTOCOL_ERROR,
    "no_start": CLOSE_PROTOCOL_ERROR,
    "unsupported_audio": CLOSE_UNSUPPORTED,
    "unsupported_language": CLOSE_UNSUPPORTED,
    "frame_too_large": CLOSE_TOO_BIG,
    "buffer_full": CLOSE_POLICY,
    "session_too_long": CLOSE_POLICY,
    "idle_timeout": CLOSE_POLICY,
    "unauthorized": CLOSE_POLICY,
    "forbidden_origin": CLOSE_POLICY,
    "unknown_session": CLOSE_POLICY,
    "taken_over": CLOSE_POLICY,
    "too_many_connections": CLOSE_TRY_AGAIN,
    "server_full": CLOSE_TRY_AGAIN,
    "session_busy": CLOSE_TRY_AGAIN,
    "engine_error": CLOSE_INTERNAL,
    "internal_error": CLOSE_INTERNAL,
    "shutting_down": CLOSE_RESTART,
    TRANSCRIBER_UNAVAILABLE: CLOSE_TRY_AGAIN,
    TRANSCRIBER_LOST: CLOSE_INTERNAL,
    TRANSCRIBER_TIMEOUT: CLOSE_TRY_AGAIN,
}

# Refusals that may succeed if the client tries again later (with backoff), resuming
# its session if it has one. Everything else is final for that stream.
RETRYABLE_CODES = frozenset(
    {
        "server_full",
        "session_busy",
        "too_many_connections",
        "shutting_down",
        "internal_error",
        TRANSCRIBER_UNAVAILABLE,
        TRANSCRIBER_LOST,
        TRANSCRIBER_TIMEOUT,
    }
)


# Of those, the refusals that say one replica is busy (full, restarting, still holding a
# session): behind a load balancer, the same request may pass on another one at once.
BUSY_CODES = frozenset({"server_full", "session_busy", "shutting_down"})


def close_code(error_code: str) -> int:
    return ERROR_CLOSE_CODES.get(error_code, CLOSE_INTERNAL)


def describe() -> dict:
    """The codes as data, for clients that should not keep a copy (the web page)."""
    return {
        "protocol": PROTOCOL_VERSION,
        "errors": {
            code: {"close": close, "retryable": code in RETRYABLE_CODES}
            for code, close in ERROR_CLOSE_CODES.items()
        },
    }
