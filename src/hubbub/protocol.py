"""Streaming protocol v1: the wire messages between any client and the transcriber.

Client -> server: a JSON ``start``, then binary ``pcm_s16le`` frames of any size, then
JSON control messages (``finalize``, ``stop``, ``ping``). Server -> client: ``ready``,
``transcript`` updates with a gap-free ``seq``, ``pong``, ``error`` (then a close) and
``ended``. docs/protocol.md describes it for client authors.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from hubbub.transcript import Segment

PROTOCOL_VERSION = 1


# -- client -> server -------------------------------------------------------------


class Start(BaseModel):
    type: Literal["start"]
    sample_rate: int = Field(16_000, ge=8_000, le=48_000)
    encoding: Literal["pcm_s16le"] = "pcm_s16le"
    channels: int = Field(1, ge=1, le=2)
    language: str | None = None
    max_speakers: int | None = Field(None, ge=1, le=32)
    session_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    last_seq: int | None = Field(None, ge=0)
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
    limits: Limits


class TranscriptUpdate(BaseModel):
    """New final segments (immutable) and the whole current partial tail (replaces)."""

    type: Literal["transcript"] = "transcript"
    seq: int
    finals: list[Segment] = Field(default_factory=list)
    partials: list[Segment] = Field(default_factory=list)
    audio_received_s: float
    audio_processed_s: float
    lag_s: float


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


# WebSocket close codes, and the machine codes sent in ``error`` before them.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

ERROR_CLOSE_CODES: dict[str, int] = {
    "bad_message": CLOSE_PROTOCOL_ERROR,
    "no_start": CLOSE_PROTOCOL_ERROR,
    "unsupported_audio": CLOSE_UNSUPPORTED,
    "frame_too_large": CLOSE_TOO_BIG,
    "buffer_full": CLOSE_POLICY,
    "session_too_long": CLOSE_POLICY,
    "idle_timeout": CLOSE_POLICY,
    "unauthorized": CLOSE_POLICY,
    "forbidden_origin": CLOSE_POLICY,
    "too_many_connections": CLOSE_TRY_AGAIN,
    "server_full": CLOSE_TRY_AGAIN,
    "unknown_session": CLOSE_POLICY,
    "engine_error": CLOSE_INTERNAL,
    "shutting_down": CLOSE_GOING_AWAY,
    # Added by the web app's relay:
    "transcriber_unavailable": CLOSE_TRY_AGAIN,
    "transcriber_lost": CLOSE_INTERNAL,
    "transcriber_timeout": CLOSE_TRY_AGAIN,
}
