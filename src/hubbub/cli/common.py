"""Helpers shared by subcommands: errors as one line + exit 2, speaker colours."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from hubbub.transcript import Segment

SPEAKER_COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "white"]

err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """A user error: one line on stderr, exit code 2, no traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def speaker_colour(speaker: str, order: list[str]) -> str:
    if speaker not in order:
        order.append(speaker)
    return SPEAKER_COLOURS[order.index(speaker) % len(SPEAKER_COLOURS)]


def segment_line(seg: Segment, order: list[str], partial: bool = False) -> Text:
    m, s = divmod(seg.start, 60)
    line = Text(f"{int(m):02d}:{s:05.2f} ", style="dim")
    line.append(f"{seg.speaker:>4} ", style=f"bold {speaker_colour(seg.speaker, order)}")
    line.append(seg.text, style="italic dim" if partial else "")
    return line
