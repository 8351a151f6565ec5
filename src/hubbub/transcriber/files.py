"""``POST /v1/audio/transcriptions``: OpenAI-compatible file transcription.

The upload goes through the same scheduler and engine as live streams (it is one more
session, admitted like any other), so files and live sessions share one batched step.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from hubbub.audio import SAMPLE_RATE, AudioError, load_audio
from hubbub.engines.base import SessionOptions
from hubbub.engines.scheduler import Delivery, SchedulerFull, threadsafe_queue_put
from hubbub.transcriber.service import Service
from hubbub.transcript import Segment, Transcript, to_srt, to_vtt

router = APIRouter()
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
FEED_PIECE_S = 5.0


async def _save_upload(upload: UploadFile, limit_bytes: int) -> Path:
    suffix = Path(upload.filename or "audio").suffix[:10]
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as tmp:
        size = 0
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit_bytes:
                Path(tmp.name).unlink(missing_ok=True)
                raise HTTPException(413, f"upload larger than {limit_bytes >> 20} MB")
            tmp.write(chunk)
    return Path(tmp.name)


async def transcribe_audio(
    svc: Service, audio, session_id: str, options: SessionOptions
) -> Transcript:
    """Feed audio through the scheduler as fast as it is processed; return the transcript."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    stream = svc.scheduler.open(
        session_id, options, threadsafe_queue_put(loop, queue), realtime=False
    )
    svc.store.create(session_id, svc.engine.name, "file")
    svc.metrics.sessions_total.labels("file").inc()
    segments: list[Segment] = []
    seq = 0
    piece = int(FEED_PIECE_S * SAMPLE_RATE)
    pos = 0

    def absorb(d: Delivery) -> bool:
        nonlocal seq
        if d.error is not None:
            raise HTTPException(500, f"transcription failed: {d.error}")
        assert d.update is not None
        if d.update.finals:
            seq += 1
            svc.store.add_finals(session_id, seq, d.update.finals, d.update.audio_processed_s)
            segments.extend(d.update.finals)
        return d.flushed

    try:
        while pos < len(audio):
            # Keep the buffer bounded: wait for room, collecting updates meanwhile.
            if svc.scheduler.room(stream) < piece:
                absorb(await queue.get())
                continue
            svc.scheduler.push(stream, audio[pos : pos + piece])
            pos += piece
        svc.scheduler.flush(stream)
        while not absorb(await queue.get()):
            pass
    finally:
        svc.scheduler.close(stream)
    svc.store.set_status(session_id, "ended")
    return Transcript(
        session_id=session_id, duration=len(audio) / SAMPLE_RATE, segments=segments
    ).sorted()


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


@router.post("/v1/audio/transcriptions")
async def create_transcription(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()] = "hubbub",
    language: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    max_speakers: Annotated[int | None, Form(ge=1, le=32)] = None,
) -> Response:
    svc: Service = request.app.state.service
    limit = int(svc.settings.max_upload_mb * (1 << 20))
    path = await _save_upload(file, limit)
    try:
        audio = await asyncio.to_thread(load_audio, path)
    except AudioError as exc:
        raise HTTPException(400, f"{file.filename}: {str(exc).split(': ', 1)[-1]}") from exc
    finally:
        path.unlink(missing_ok=True)
    if len(audio) == 0:
        raise HTTPException(400, f"{file.filename}: contains no audio")
    if len(audio) / SAMPLE_RATE > svc.settings.max_session_s:
        raise HTTPException(413, f"audio longer than {svc.settings.max_session_s:.0f} s")
    try:
        t = await transcribe_audio(
            svc, audio, svc.new_session_id(), SessionOptions(language, max_speakers)
        )
    except SchedulerFull as exc:
        svc.metrics.sessions_refused.labels("full").inc()
        raise HTTPException(
            503, f"server is at capacity ({exc}); retry later", headers={"Retry-After": "5"}
        ) from exc
    match response_format:
        case "text":
            return PlainTextResponse(t.text + "\n")
        case "srt":
            return PlainTextResponse(to_srt(t))
        case "vtt":
            return PlainTextResponse(to_vtt(t), media_type="text/vtt")
        case "verbose_json":
            return JSONResponse(_verbose(t, language or "en"))
        case "diarized_json":
            return JSONResponse(_diarized(t))
    return JSONResponse({"text": t.text})
