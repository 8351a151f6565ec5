"""``POST /v1/audio/transcriptions``: OpenAI-compatible file transcription.

The upload goes through the same scheduler and engine as live streams (it is one more
session, admitted like any other), so files and live sessions share one batched step.
Nothing about an upload is trusted before it is checked: the key before the body is
read, the size while the body streams in, the duration from the file's header before
any decoding, and again as blocks are decoded and fed to the engine. Memory stays
bounded by the block size, whatever the file claims or holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from hubbub.audio import SAMPLE_RATE, AudioError
from hubbub.decode import AudioFile, AudioTooLong
from hubbub.engines.base import SessionOptions, UnsupportedOptions
from hubbub.limits import read_form
from hubbub.protocol import Language, SpeakerCap
from hubbub.security import Identity, require_identity
from hubbub.transcriber.scheduler import Delivery, SchedulerFull, threadsafe_queue_put
from hubbub.transcriber.service import Service
from hubbub.transcript import Segment, Transcript, to_srt, to_vtt

router = APIRouter()
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
FEED_PIECE_S = 5.0


class TranscriptionForm(BaseModel):
    """The form fields besides ``file`` (OpenAI's names; ``model`` is accepted, unused)."""

    model: str = "hubbub"
    language: Language | None = None
    response_format: ResponseFormat = "json"
    max_speakers: SpeakerCap | None = None


def _pieces(blocks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Decoded blocks regrouped into pieces of ``size`` samples (the last may be short)."""
    held: list[np.ndarray] = []
    count = 0
    for block in blocks:
        held.append(block)
        count += len(block)
        while count >= size:
            joined = np.concatenate(held)
            yield joined[:size]
            held, count = [joined[size:]], count - size
    if count:
        yield np.concatenate(held)


async def transcribe_file(
    svc: Service, audio: AudioFile, session_id: str, options: SessionOptions, tenant: str
) -> Transcript:
    """Decode ``audio`` a piece at a time and feed it through the scheduler as fast as it
    is processed; return the transcript (AudioError when it passes the length limit)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    stream = svc.scheduler.open(
        session_id, options, threadsafe_queue_put(loop, queue), realtime=False
    )
    svc.store.create(session_id, svc.engine.name, "file", tenant)
    svc.metrics.sessions_total.labels("file").inc()
    segments: list[Segment] = []
    seq = 0
    piece = int(FEED_PIECE_S * SAMPLE_RATE)
    pieces = _pieces(audio.blocks(svc.settings.max_session_s), piece)
    fed = 0

    def absorb(d: Delivery, flush: int = 0) -> bool:
        nonlocal seq
        if d.error is not None:
            raise HTTPException(500, f"transcription failed: {d.error}")
        assert d.update is not None
        if d.update.finals:
            seq += 1
            svc.store.add_finals(session_id, seq, d.update.finals, d.update.audio_processed_s)
            segments.extend(d.update.finals)
        return bool(flush) and d.flushed_through >= flush

    try:
        while (block := await asyncio.to_thread(next, pieces, None)) is not None:
            # Keep the buffer bounded: wait for room, collecting updates meanwhile.
            while svc.scheduler.room(stream) < len(block):
                absorb(await queue.get())
            svc.scheduler.push(stream, block)
            fed += len(block)
        flush = svc.scheduler.flush(stream)
        while not absorb(await queue.get(), flush):
            pass
        svc.store.set_status(session_id, "ended")
    except BaseException:
        svc.store.set_status(session_id, "failed")
        raise
    finally:
        svc.scheduler.close(stream)
    if fed == 0:
        raise AudioError(f"{audio.name}: contains no audio")
    return Transcript(session_id=session_id, duration=fed / SAMPLE_RATE, segments=segments).sorted()


def _verbose(t: Transcript, language: str) -> dict:
    return {
        "task": "transcribe",
        "language": language,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [
            {"id": i, "start": s.start, "end": s.end, "text": s.text, "speaker": s.speaker}
            for i, s in enumerate(t.segments)
        ],
        "words": [
            {"word": w.text.strip(), "start": w.start, "end": w.end, "speaker": s.speaker}
            for s in t.segments
            for w in s.words
        ],
    }


def _diarized(t: Transcript) -> dict:
    return {
        "text": t.text,
        "duration": round(t.duration, 3),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": s.id,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "speaker": s.speaker,
            }
            for s in t.segments
        ],
    }


def _form(fields: dict[str, str]) -> TranscriptionForm:
    try:
        return TranscriptionForm.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "form"
        raise HTTPException(400, f"{where}: {err['msg']}") from None


@router.post("/v1/audio/transcriptions")
async def create_transcription(
    request: Request, caller: Annotated[Identity, Depends(require_identity)]
) -> Response:
    svc: Service = request.app.state.service
    form = await read_form(request, int(svc.settings.max_upload_mb * (1 << 20)))
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, "file: an audio file is required")
    opts = _form({k: v for k, v in form.items() if isinstance(v, str)})
    name = upload.filename or "upload"
    try:
        audio = await asyncio.to_thread(AudioFile, upload.file, name)
    except AudioError as exc:
        raise HTTPException(400, str(exc)) from exc
    try:
        limit = svc.settings.max_session_s
        if audio.duration_s is not None and audio.duration_s > limit:
            raise AudioTooLong(f"{name}: longer than {limit:.0f} s")
        options = SessionOptions(opts.language or svc.settings.language, opts.max_speakers)
        svc.engine.check(options)
        t = await transcribe_file(svc, audio, svc.new_session_id(), options, caller.tenant)
    except SchedulerFull as exc:
        svc.metrics.sessions_refused.labels("server_full").inc()
        raise HTTPException(
            503, f"server is at capacity ({exc}); retry later", headers={"Retry-After": "5"}
        ) from exc
    except AudioError as exc:
        status = 413 if isinstance(exc, AudioTooLong) else 400
        raise HTTPException(status, str(exc)) from exc
    except UnsupportedOptions as exc:
        raise HTTPException(400, str(exc)) from exc
    finally:
        audio.close()
        await form.close()
    match opts.response_format:
        case "text":
            return PlainTextResponse(t.text + "\n")
        case "srt":
            return PlainTextResponse(to_srt(t))
        case "vtt":
            return PlainTextResponse(to_vtt(t), media_type="text/vtt")
        case "verbose_json":
            return JSONResponse(_verbose(t, options.language or "en"))
        case "diarized_json":
            return JSONResponse(_diarized(t))
    return JSONResponse({"text": t.text})
