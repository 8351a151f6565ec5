"""``hubbub transcribe FILE...``: who said what, with times, through the streaming path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from hubbub.audio import SAMPLE_RATE, AudioError
from hubbub.cli.common import fail, native_stderr_silenced, segment_line, settings_from
from hubbub.decode import load_audio
from hubbub.engines.base import EngineUpdate, SessionOptions, UnsupportedOptions
from hubbub.engines.factory import create_engine
from hubbub.protocol import MAX_SPEAKERS
from hubbub.recordings import transcribe_many
from hubbub.transcript import EXPORT_FORMATS, ExportFormat, export


def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files (wav, flac, mp3, ogg, m4a)")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json|txt|srt|vtt|rttm")] = "txt",
    out: Annotated[Path | None, typer.Option(help="Write <name>.<format> files here")] = None,
    max_speakers: Annotated[int | None, typer.Option(min=1, max=MAX_SPEAKERS)] = None,
    language: Annotated[
        str | None, typer.Option(help="Language code (default: the model's, or detected)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Whisper model name or CT2 dir")] = None,
    engine: Annotated[str | None, typer.Option(help="auto|cpu|nemo")] = None,
    realtime: Annotated[bool, typer.Option(help="Feed audio at the pace of speech")] = False,
) -> None:
    """Transcribe recordings with speakers, streaming them through the live engine."""
    if fmt not in EXPORT_FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    settings = settings_from(model, engine=engine, language=language)
    audios = {}
    for f in files:
        try:
            with native_stderr_silenced():
                audios[f.stem if f.stem not in audios else str(f)] = load_audio(f)
        except AudioError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{f}: cannot read ({exc.strerror or exc.__class__.__name__})")
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"{out}: cannot write there ({exc.strerror or exc.__class__.__name__})")
    sources = dict(zip(audios, files, strict=True))
    eng = create_engine(settings)
    stderr = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        tasks = {
            name: progress.add_task(name, total=max(1.0, len(a) / SAMPLE_RATE))
            for name, a in audios.items()
        }

        def on_update(name: str, processed_s: float, _upd: EngineUpdate) -> None:
            progress.update(tasks[name], completed=processed_s)

        try:
            transcripts = transcribe_many(
                eng,
                audios,
                SessionOptions(language=settings.language, max_speakers=max_speakers),
                realtime=realtime,
                on_update=on_update,
            )
        except UnsupportedOptions as exc:
            fail(str(exc))
    fmt_t: ExportFormat = fmt  # type: ignore[assignment]
    if out is not None:
        for name, t in transcripts.items():
            path = out / f"{Path(sources[name]).stem}.{fmt}"
            try:
                path.write_text(export(t, fmt_t, file_id=name), encoding="utf-8")
            except OSError as exc:
                fail(f"{path}: cannot write ({exc.strerror or exc.__class__.__name__})")
            stderr.print(f"wrote {path} ({len(t.segments)} segments, {len(t.speakers)} speakers)")
        return
    console = Console()
    for name, t in transcripts.items():
        if len(transcripts) > 1:
            console.rule(str(sources[name]))
        if fmt == "txt" and console.is_terminal:
            order: list[str] = []
            for seg in t.segments:
                console.print(segment_line(seg, order))
        else:
            sys.stdout.write(export(t, fmt_t, file_id=name))
