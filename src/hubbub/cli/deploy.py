"""``hubbub deploy flyte``: both services as Flyte 2 apps (hubbub/deploy/flyte_apps.py)."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from hubbub.cli.common import fail

app = typer.Typer(no_args_is_help=True, help="Deploy hubbub beyond one machine.")
console = Console()


def _duration(seconds: int | None) -> str:
    if not seconds:
        return "-"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def plan_table(plans: list[Any], title: str) -> Table:
    """The apps side by side: what runs where, how it scales, who it talks to."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for p in plans:
        table.add_column(p.name, overflow="fold")
    rows = {
        "image": lambda p: p.image,
        "resources": lambda p: f"{p.cpu} CPU, {p.memory}" + (f", GPU {p.gpu}" if p.gpu else ""),
        "replicas": lambda p: "{}-{}".format(*p.replicas),
        "scale at": lambda p: f"{p.concurrency} streams / replica" if p.concurrency else "-",
        "scale down after": lambda p: _duration(p.scaledown_after_s),
        "request timeout": lambda p: _duration(p.request_timeout_s),
        "auth": lambda p: "Flyte login" if p.requires_auth else "public",
        "port": lambda p: str(p.port),
        "env": lambda p: " ".join(f"{k}={v}" for k, v in p.env.items()) or "-",
        "secrets": lambda p: ", ".join(p.secrets) or "-",
        "depends on": lambda p: ", ".join(p.depends_on) or "-",
        "entry": lambda p: p.module,
    }
    for label, cell in rows.items():
        table.add_row(label, *(cell(p) for p in plans))
    return table


@app.command("flyte")
def flyte(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan both apps offline; deploy nothing")
    ] = False,
    gpu: Annotated[
        str | None, typer.Option(help='Transcriber GPU, TYPE:N (default A10G:1); "none" = CPU')
    ] = None,
    replicas: Annotated[
        str | None, typer.Option(help="Transcriber replicas, N or MIN:MAX (default 1:2)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Streams per transcriber replica before scaling")
    ] = None,
    cpu: Annotated[str | None, typer.Option(help="Transcriber CPUs (default 4)")] = None,
    memory: Annotated[str | None, typer.Option(help="Transcriber memory (default 16Gi)")] = None,
    api_key_secret: Annotated[
        str | None, typer.Option(help="Flyte secret with the API key both apps share")
    ] = None,
    database_secret: Annotated[
        str | None,
        typer.Option(help="Flyte secret with the transcript store's URL (PostgreSQL)"),
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="Serve without Flyte authentication")
    ] = False,
) -> None:
    """Deploy the transcriber (GPU) and the web app (CPU) as two Flyte apps.

    Needs the flyte extra (pip install 'hubbub[flyte]') and, unless --dry-run, a Flyte
    config (flyte create config ...). HUBBUB_FLYTE_* variables set the defaults.
    """
    try:
        from hubbub.deploy import flyte_apps
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "flyte":
            fail("deploying to Flyte needs the flyte extra: pip install 'hubbub[flyte]'")
        raise
    flags = {
        "gpu": gpu,
        "replicas": replicas,
        "concurrency": concurrency,
        "cpu": cpu,
        "memory": memory,
        "api_key_secret": api_key_secret,
        "database_secret": database_secret,
        "requires_auth": False if public else None,
    }
    try:
        config = flyte_apps.FlyteDeployConfig(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = str(err["loc"][0]).replace("_", "-")
        fail(f"--{flag}: {err['msg'].removeprefix('Value error, ')}")

    warning = config.store_warning()
    if warning:
        console.print(f"[yellow]note:[/] {warning}")
    started = time.monotonic()
    logging.getLogger("flyte").setLevel(logging.ERROR)
    # Flyte prints each app's code version on stdout; the table says what matters.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            plans = flyte_apps.deploy(config, dry_run=dry_run)
        except flyte_apps.DeployError as exc:  # ours: no checkout, no config, no uv
            fail(str(exc))
        except Exception as exc:  # the SDK's: cluster unreachable, image build, refused spec
            fail(f"flyte deploy failed: {type(exc).__name__}: {exc}")
    took = time.monotonic() - started
    title = "Planned (dry run, nothing deployed)" if dry_run else "Deployed"
    console.print(plan_table(plans, f"{title} in {took:.1f} s"))
    if dry_run:
        return
    web = next(p for p in plans if p.name == flyte_apps.WEB_NAME)
    if web.endpoint:
        console.print(f"[bold green]open[/] [bold]{web.endpoint}[/]")
    else:
        console.print(f"the URL appears once the app is up: flyte get app {web.name}")
