"""``hubbub eval MANIFEST``: WER, DER (collar 0.25 s) and cpWER through the streaming path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hubbub.audio import AudioError
from hubbub.cli.common import fail, settings_from
from hubbub.engines.base import SessionOptions
from hubbub.engines.factory import create_engine
from hubbub.evaluation.runner import (
    FileScore,
    from_manifest,
    load_manifest,
    run_streaming,
    run_whole_file,
    summary,
)
from hubbub.evaluation.runner import built as built_conversations
from hubbub.protocol import MAX_SPEAKERS


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _missed(row: dict) -> str:
    """Missed speech, and in brackets the overlapped speech a one-speaker-at-a-time
    transcript cannot cover (``overlap_floor``): the part of the miss no tuning wins back."""
    if row["der_parts"] is None:
        return "-"
    return f"{_pct(row['der_parts']['missed'])} ({_pct(row['overlap_floor'])})"


def _both(live: float | None, refined: float | None) -> str:
    """``refined (live)``: the speakers finally stored, and as first given out."""
    if refined is None:
        return "-"
    return f"{_pct(refined)} ({_pct(live)})"


def evaluate(
    manifest: Annotated[Path, typer.Argument(help="manifest.json of recordings + references")],
    category: Annotated[list[str] | None, typer.Option(help="Only these categories")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N entries")] = None,
    built: Annotated[
        int,
        typer.Option(
            min=0, help="Also build N conversations from the manifest's single-speaker clips"
        ),
    ] = 0,
    telephone: Annotated[
        bool,
        typer.Option(help="Also the built conversations as a phone call carries them (G.711)"),
    ] = False,
    whole_file: Annotated[
        bool, typer.Option(help="Baseline: faster-whisper on whole files, no speakers")
    ] = False,
    collar: Annotated[
        float, typer.Option(min=0.0, help="DER: seconds not scored each side of a boundary")
    ] = 0.25,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON")] = None,
    model: Annotated[str | None, typer.Option(help="Whisper model name or CT2 dir")] = None,
    max_speakers: Annotated[int | None, typer.Option(min=1, max=MAX_SPEAKERS)] = None,
) -> None:
    """Score recordings against their references; print a table, optionally JSON.

    DER and cpWER are given for the speakers as finally stored (after the engine's second
    looks), with those first given out live in brackets. Where a category is split into a
    tuning and a test half (hubbub.evaluation.splits), each half has its own row.
    """
    if not manifest.is_file():
        fail(f"{manifest}: no such manifest")
    try:
        entries = load_manifest(manifest, category)
    except (ValueError, OSError) as exc:
        fail(f"{manifest}: not a usable manifest ({exc})")
    entries = entries[:limit] if limit else entries
    recordings = from_manifest(entries, manifest.parent)
    if built:
        recordings += built_conversations(manifest, built, telephone)
    if not recordings:
        fail("no entries to evaluate")
    settings = settings_from(model)
    console = Console(width=max(Console().width, 120))  # category names stay whole

    def show(s: FileScore) -> None:
        console.print(
            f"[dim]{s.id}[/] wer={_pct(s.wer.rate if s.wer else None)} "
            f"der={_pct(s.der.rate if s.der else None)} "
            f"spk={s.hyp_speakers}/{s.ref_speakers}",
            highlight=False,
            soft_wrap=True,  # one line per file, however long its id
        )

    try:
        if whole_file:
            from hubbub.engines.cpu.whisper import resolve_model

            scores = run_whole_file(resolve_model(settings.cpu.model), recordings, on_file=show)
        else:
            engine = create_engine(settings)
            engine.warmup()
            opts = SessionOptions(language=settings.language, max_speakers=max_speakers)
            scores = run_streaming(engine, recordings, opts, on_file=show, collar=collar)
    except AudioError as exc:
        fail(str(exc))

    totals = summary(scores)
    table = Table(
        title=f"hubbub eval: {manifest.name} ({'whole-file' if whole_file else 'streaming'}), "
        f"collar {collar:g} s"
    )
    columns = ("category", "files", "WER", "DER (live)", "missed (overlap)", "cpWER (live)")
    for col in (*columns, "count exact (live)"):
        table.add_column(col, justify="right" if col != "category" else "left")
    for cat, row in totals.items():
        table.add_row(
            cat,
            str(row["files"]),
            _pct(row["wer"]),
            _both(row["live_der"], row["der"]),
            _missed(row),
            _both(row["live_cpwer"], row["cpwer"]),
            _both(row["live_speaker_count_exact"], row["speaker_count_exact"]),
        )
    console.print(table)
    if json_out is not None:
        payload = {"collar_s": collar, "summary": totals, "files": [s.row() for s in scores]}
        json_out.write_text(json.dumps(payload, indent=2) + "\n")
