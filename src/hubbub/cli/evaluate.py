"""``hubbub eval MANIFEST``: WER, DER (collar 0.25 s) and cpWER through the streaming path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hubbub.audio import AudioError
from hubbub.cli.common import fail
from hubbub.engines.base import SessionOptions
from hubbub.engines.factory import create_engine
from hubbub.evaluation.runner import (
    FileScore,
    load_manifest,
    run_streaming,
    run_whole_file,
    summary,
)
from hubbub.settings import Settings


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def evaluate(
    manifest: Annotated[Path, typer.Argument(help="manifest.json of recordings + references")],
    category: Annotated[list[str] | None, typer.Option(help="Only these categories")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N entries")] = None,
    whole_file: Annotated[
        bool, typer.Option(help="Baseline: faster-whisper on whole files, no speakers")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON")] = None,
    model: Annotated[str | None, typer.Option(help="Whisper model name or CT2 dir")] = None,
    max_speakers: Annotated[int | None, typer.Option(min=1, max=32)] = None,
) -> None:
    """Score recordings against their references; print a table, optionally JSON."""
    if not manifest.is_file():
        fail(f"{manifest}: no such manifest")
    try:
        entries = load_manifest(manifest, category)
    except (ValueError, OSError) as exc:
        fail(f"{manifest}: not a usable manifest ({exc})")
    entries = entries[:limit] if limit else entries
    if not entries:
        fail("no entries to evaluate")
    root = manifest.parent
    settings = Settings(**({"model": model} if model else {}))
    console = Console()

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

            scores = run_whole_file(resolve_model(settings.model), entries, root, on_file=show)
        else:
            engine = create_engine(settings)
            engine.warmup()
            opts = SessionOptions(language=settings.language, max_speakers=max_speakers)
            scores = run_streaming(engine, entries, root, opts, on_file=show)
    except AudioError as exc:
        fail(str(exc))

    totals = summary(scores)
    table = Table(
        title=f"hubbub eval: {manifest.name} ({'whole-file' if whole_file else 'streaming'})"
    )
    for col in ("category", "files", "WER", "DER", "cpWER", "speaker count exact"):
        table.add_column(col, justify="right" if col != "category" else "left")
    for cat, row in totals.items():
        exact = row["speaker_count_exact"]
        table.add_row(
            cat,
            str(row["files"]),
            _pct(row["wer"]),
            _pct(row["der"]),
            _pct(row["cpwer"]),
            "-" if exact is None else f"{100 * exact:.0f}%",
        )
    console.print(table)
    if json_out is not None:
        payload = {"summary": totals, "files": [s.row() for s in scores]}
        json_out.write_text(json.dumps(payload, indent=2) + "\n")
