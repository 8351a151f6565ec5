"""The ``hubbub`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import typer

from hubbub.cli import bench, deploy, evaluate, serve, stream, transcribe

app = typer.Typer(
    name="hubbub",
    help="Live multi-speaker transcription you host yourself.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("transcribe")(transcribe.transcribe)
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)
app.command("transcriber")(serve.transcriber)
app.command("web")(serve.web)
app.command("stream")(stream.stream)
app.command("bench")(bench.bench)
app.add_typer(deploy.app, name="deploy")


def main() -> None:
    app()
