"""``hubbub stream FILE --url``: a real-time client that shows the live transcript."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from hubbub.audio import SAMPLE_RATE, AudioError, float_to_pcm16
from hubbub.cli.common import fail, segment_line
from hubbub.decode import load_audio
from hubbub.pacing import Pacer
from hubbub.protocol import (
    MAX_SPEAKERS,
    Ended,
    ErrorMessage,
    SpeakersUpdate,
    Start,
    TranscriptUpdate,
)
from hubbub.transcript import EXPORT_FORMATS, Segment, Transcript, export, relabelled

FRAME_S = 0.1


def stream(
    file: Annotated[Path, typer.Argument(help="Audio file to stream")],
    url: Annotated[str, typer.Option(help="Transcriber (or web app) base URL")] = (
        "http://127.0.0.1:8765"
    ),
    api_key: Annotated[
        str | None, typer.Option(envvar="HUBBUB_API_KEY", help="The server's API key")
    ] = None,
    resume_within: Annotated[
        float,
        typer.Option(
            help="Seconds to keep trying to resume a cut stream, or to open one that a "
            "full server refused"
        ),
    ] = 60.0,
    speed: Annotated[float, typer.Option(help="1 = real time; 0 = as fast as accepted")] = 1.0,
    max_speakers: Annotated[int | None, typer.Option(min=1, max=MAX_SPEAKERS)] = None,
    language: Annotated[str | None, typer.Option(help="Language code, e.g. en, de")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the transcript (.srt, .json...)")
    ] = None,
) -> None:
    """Stream a file to a transcriber at the pace of speech, showing who says what."""
    if out is not None and out.suffix.lstrip(".") not in EXPORT_FORMATS:
        fail(f"--out must end in one of: {', '.join('.' + f for f in EXPORT_FORMATS)}")
    try:
        audio = load_audio(file)
    except AudioError as exc:
        fail(str(exc))
    start = Start(type="start", max_speakers=max_speakers, language=language)
    t = asyncio.run(_run(url, api_key, audio, speed, start, resume_within))
    if out is not None:
        out.write_text(export(t, out.suffix.lstrip("."), file_id=file.stem))  # type: ignore[arg-type]
        Console(stderr=True).print(f"wrote {out}")


async def _run(
    url: str,
    api_key: str | None,
    audio,
    speed: float,
    start: Start,
    resume_within_s: float,
) -> Transcript:
    from hubbub.client import TranscriberClient, TranscriberError

    console = Console()
    try:
        client = TranscriberClient(url, api_key=api_key)
    except ValueError as exc:
        fail(str(exc))
    order: list[str] = []
    finals: list[Segment] = []
    state = {"partials": [], "lag": 0.0, "processed": 0.0}
    try:
        stream = await client.open_resumable(
            start, open_within_s=resume_within_s, resume_within_s=resume_within_s
        )
    except TranscriberError as exc:
        await client.aclose()
        fail(f"{exc.code}: {exc.message}")

    def view() -> Group:
        lines = [segment_line(p, order, partial=True) for p in state["partials"]]
        status = Text(
            f"{state['processed']:6.1f} s processed   lag {state['lag']:.2f} s", style="dim"
        )
        return Group(*lines, status)

    async def send() -> None:
        frame = int(FRAME_S * SAMPLE_RATE)
        pacer = Pacer(speed)
        for i in range(0, len(audio), frame):
            await pacer.until(i / SAMPLE_RATE)
            await stream.send_audio(float_to_pcm16(audio[i : i + frame]))
        await stream.stop()

    sender = asyncio.create_task(send())
    try:
        with Live(view(), console=console, refresh_per_second=8, transient=True) as live:
            async for msg in stream:
                if isinstance(msg, TranscriptUpdate):
                    for seg in msg.finals:
                        live.console.print(segment_line(seg, order))
                    finals.extend(msg.finals)
                    state.update(
                        partials=msg.partials, lag=msg.lag_s, processed=msg.audio_processed_s
                    )
                    live.update(view())
                elif isinstance(msg, SpeakersUpdate):  # the export has the revised speakers
                    finals = relabelled(finals, msg.relabel)
                elif isinstance(msg, ErrorMessage):
                    fail(f"{msg.code}: {msg.message}")
                elif isinstance(msg, Ended):
                    break
    finally:
        sender.cancel()
        await stream.close()
        await client.aclose()
    speakers = len({s.speaker for s in finals})
    console.print(
        f"[dim]{len(finals)} segments, {speakers} speakers, session {stream.session_id}[/]"
    )
    return Transcript(
        session_id=stream.session_id, duration=len(audio) / SAMPLE_RATE, segments=finals
    ).sorted()
