"""Helpers shared by subcommands: errors as one line + exit 2, speaker colours."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from hubbub.settings import Settings
from hubbub.transcript import Segment

SPEAKER_COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "white"]

err_console = Console(stderr=True)


def settings_from(model: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with the flags a command was given over them
    (``--model`` is the CPU engine's; flags left unset change nothing)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if model is not None:
        given["cpu"] = {"model": model}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}")


def fail(message: str) -> NoReturn:
    """A user error: one line on stderr, exit code 2, no traceback."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what C libraries write straight to fd 2 (libsndfile's mpg123 complains about
    every non-MP3 it probes), so a bad file gives our one-line error and nothing else.

    Process-wide: for the CLI's single-threaded file loading only, never in a server.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


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
