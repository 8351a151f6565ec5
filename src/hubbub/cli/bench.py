"""``hubbub bench``: latency and cost of N real-time streams; streaming vs whole-file WER."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from hubbub.audio import AudioError
from hubbub.cli.common import fail, native_stderr_silenced, settings_from

Mode = Literal["realtime", "wer", "load", "relay", "latency", "all"]
MODES = ("realtime", "wer", "load", "relay", "latency", "all")


def _default_data() -> Path | None:
    env = os.environ.get("HUBBUB_SPEECH_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path("../shared/data/speech"), Path("shared/data/speech")]
    return next((c for c in candidates if (c / "manifest.json").is_file()), None)


def _s(x: float | None, unit: str = "s") -> str:
    return "-" if x is None else f"{x:.2f} {unit}".strip()


def bench(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Recordings to stream (default: real speech from --data)"),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="realtime (engine) | wer | load (real servers) | relay (web app overhead) | "
            "latency (when words show and turn final, real server) | all"
        ),
    ] = "realtime",
    streams: Annotated[int, typer.Option(min=1, max=64, help="Concurrent live streams")] = 2,
    seconds: Annotated[
        float, typer.Option(min=1.0, help="Audio per stream (realtime: also the wall time)")
    ] = 90.0,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with manifest.json (default: $HUBBUB_SPEECH_DATA)"),
    ] = None,
    category: Annotated[str, typer.Option(help="wer mode: manifest category")] = "wer_single",
    limit: Annotated[
        int | None, typer.Option(min=1, help="wer and latency modes: first N entries")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Whisper model name or CT2 dir")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON")] = None,
    via_web: Annotated[
        bool, typer.Option(help="load mode: stream through the web app's relay, as browsers do")
    ] = False,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="load mode: this many transcribers behind nginx on one PostgreSQL store "
            "(Debian's nginx and postgresql)",
        ),
    ] = 1,
    half: Annotated[
        str, typer.Option(help="latency mode: clips of the 'tune' or 'test' half, or 'all'")
    ] = "test",
    server_env: Annotated[
        list[str] | None,
        typer.Option("--set", help="latency mode: a server setting, HUBBUB_X=value (repeat)"),
    ] = None,
) -> None:
    """Benchmark the engine: N concurrent real-time streams, and/or WER vs whole files."""
    if mode not in MODES:
        fail(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode in ("load", "relay"):
        _bench_servers(mode, files, streams, seconds, data, json_out, via_web, replicas)
        return
    if mode == "latency":
        _bench_latency(streams, data, category, half, limit, server_env or [], json_out)
        return
    from hubbub.engines.factory import create_engine
    from hubbub.evaluation import benchmark

    root = data or _default_data()
    no_data = root is None or not (root / "manifest.json").is_file()
    if no_data and (not files or mode != "realtime"):
        fail("no speech data: pass --data DIR (a folder with manifest.json) or files")
    settings = settings_from(model)
    console = Console()
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_avg": _load()}}

    audios = {}
    if mode in ("realtime", "all"):
        try:
            with native_stderr_silenced():
                if files:
                    audios = benchmark.file_streams(files, streams, seconds)
                else:
                    assert root is not None
                    audios = benchmark.speech_streams(root / "manifest.json", streams, seconds)
        except (AudioError, OSError, ValueError, KeyError) as exc:
            fail(str(exc))
    entries: list[dict] = []
    if mode in ("wer", "all"):
        from hubbub.evaluation.runner import load_manifest

        assert root is not None
        try:
            entries = load_manifest(root / "manifest.json", [category])
        except (ValueError, OSError) as exc:
            fail(f"{root / 'manifest.json'}: not a usable manifest ({exc})")
        entries = [e for e in entries if e.get("ref_text")][:limit]
        if not entries:
            fail(f"no entries with a reference text in category {category!r}")

    rss_before = benchmark.rss_mb()
    engine = create_engine(settings)
    engine.warmup()
    report["rss_after_load_mb"] = round(benchmark.rss_mb(), 1)
    report["rss_before_load_mb"] = round(rss_before, 1)
    report["engine"] = engine.name
    report["model"] = settings.cpu.model

    if audios:
        secs = max(len(a) for a in audios.values()) / 16_000
        console.print(
            f"[dim]streaming {len(audios)} x {secs:.0f} s in real time "
            f"({engine.name}, {settings.cpu.model})...[/]",
            highlight=False,
        )
        rt = benchmark.run_realtime(engine, audios)
        report["realtime"] = rt.to_json()
        for table in _realtime_tables(rt):
            console.print(table)
    if entries:
        from hubbub.engines.cpu.whisper import resolve_model

        console.print(f"[dim]WER on {len(entries)} files, streaming then whole-file...[/]")
        cmp = benchmark.compare_wer(engine, resolve_model(settings.cpu.model), entries, root)
        report["wer"] = cmp.to_json()
        console.print(_wer_table(cmp, category))
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            fail(f"{json_out}: cannot write ({exc.strerror or exc.__class__.__name__})")


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _realtime_tables(rt) -> tuple[Table, Table]:
    s = rt.summary()
    latency = Table(title=f"hubbub bench: {rt.streams} real-time stream(s) x {rt.audio_s:.0f} s")
    latency.add_column("latency (wall clock)")
    for col in ("p50", "p95", "max", "target"):
        latency.add_column(col, justify="right", style="dim" if col == "target" else None)

    def row(label: str, key: str, target: str = "") -> None:
        latency.add_row(label, *(_s(s.get(f"{key}_{q}_s")) for q in ("p50", "p95", "max")), target)

    row(f"final after speech ends (n={s['utterances']})", "final_delay", "p50 <= 1.5 s")
    row("partial refresh while speaking", "partial_interval", "<= 1 s")
    row("first partial after speech starts", "first_partial")
    row(f"step ({len(rt.step_s)} x {rt.chunk_s:.2f} s chunks)", "step")
    cost = Table(show_header=True)
    cost.add_column("cost")
    cost.add_column("value", justify="right")
    cost.add_column("target", justify="right", style="dim")
    cost.add_row("worst lag behind the audio clock", _s(s["max_lag_s"]), "")
    cost.add_row("compute real-time factor per stream", _s(s["rtf"], ""), "")
    cost.add_row("engine busy, share of wall clock", f"{100 * s['busy_fraction']:.0f}%", "< 100%")
    cost.add_row("CPU cores used", _s(s["cpu_cores_used"], ""), "")
    cost.add_row("RSS at start / end", f"{s['rss_start_mb']:.0f} / {s['rss_end_mb']:.0f} MB", "")
    cost.add_row("peak RSS", f"{s['peak_rss_mb']:.0f} MB", "<= 600 MB")
    return latency, cost


def _wer_table(cmp, category: str) -> Table:
    s = cmp.summary()
    table = Table(title=f"hubbub bench: WER on {s['files']} files ({category}, {s['audio_s']} s)")
    for col in ("path", "WER", "RTF (wall / audio)"):
        table.add_column(col, justify="left" if col == "path" else "right")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    table.add_row(
        "streaming (engine, partials too)", pct(s["wer_streaming"]), _s(s["rtf_streaming"], "")
    )
    table.add_row(
        "whole-file (faster-whisper)", pct(s["wer_whole_file"]), _s(s["rtf_whole_file"], "")
    )
    return table


def _bench_servers(
    mode: str,
    files: list[Path] | None,
    streams: int,
    seconds: float,
    data: Path | None,
    json_out: Path | None,
    via_web: bool = False,
    replicas: int = 1,
) -> None:
    """``load``: N live streams against a real transcriber (or replicas behind nginx);
    ``relay``: the web app's cost."""
    from hubbub.evaluation import benchmark, loadtest

    console = Console()
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_avg": _load()}}
    if mode == "relay":
        console.print(
            "[dim]ping round trips: straight to the transcriber, then via the web app...[/]"
        )
        r = loadtest.run_relay_overhead()
        report["relay"] = r
        table = Table(title=f"hubbub bench: relay overhead ({r['pings']} round trips)")
        for col in ("path", "p50", "p95"):
            table.add_column(col, justify="left" if col == "path" else "right")
        table.add_row(
            "client -> transcriber", f"{r['direct_p50_ms']} ms", f"{r['direct_p95_ms']} ms"
        )
        table.add_row(
            "client -> web app -> transcriber", f"{r['relay_p50_ms']} ms", f"{r['relay_p95_ms']} ms"
        )
        table.add_row("added by the relay", "", f"{r['added_p95_ms']} ms (target <= 20 ms)")
        console.print(table)
    else:
        root = data or _default_data()
        try:
            with native_stderr_silenced():
                if files:
                    audios = benchmark.file_streams(files, streams, seconds)
                elif root is not None:
                    audios = benchmark.speech_streams(root / "manifest.json", streams, seconds)
                else:
                    fail("no speech data: pass --data DIR (a folder with manifest.json) or files")
        except (AudioError, OSError, ValueError, KeyError) as exc:
            fail(str(exc))
        console.print(
            f"[dim]{streams} live stream(s) x {seconds:.0f} s against "
            f"{f'{replicas} transcribers behind nginx' if replicas > 1 else 'a transcriber'}, "
            "one more stream than admitted, then each stream's audio alone...[/]",
            highlight=False,
        )
        res = loadtest.run_load(audios, via_web=via_web, replicas=replicas)
        report["load"] = res.to_json()
        table = Table(
            title=f"hubbub bench: load, {res.streams} streams x {res.seconds:.0f} s via {res.via}"
        )
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_column("target", justify="right", style="dim")
        table.add_row("capacity advertised", str(res.capacity), "")
        table.add_row(
            "streams held in real time (lag p95 < 3 s)",
            f"{res.held_realtime} of {res.streams}",
            "all",
        )
        table.add_row("one stream past capacity", res.extra_stream, "server_full")
        table.add_row(
            "lag p50 / p95 / max",
            f"{_s(res.lag_p50)} / {_s(res.lag_p95)} / {_s(res.lag_max)}",
            "p95 < 3 s",
        )
        table.add_row(
            "final text after its last word was sent, p50 / p95",
            f"{_s(res.final_latency_p50)} / {_s(res.final_latency_p95)}",
            "p50 <= 2 s",
        )
        table.add_row(
            "server RSS idle / after 1 min / end",
            f"{res.rss_start_mb:.0f} / {res.rss_warm_mb:.0f} / {res.rss_end_mb:.0f} MB "
            f"({100 * res.rss_growth:+.1f}% after 1 min)",
            "< +5%",
        )
        table.add_row(
            "final words identical to the stream alone", f"{res.identical} of {res.streams}", ""
        )
        table.add_row(
            "final words against the stream alone (WER)",
            " / ".join(f"{100 * p['wer_vs_alone']:.1f}%" for p in res.per_stream),
            "",
        )
        agree = [p["speakers_agree"] for p in res.per_stream if p["speakers_agree"] is not None]
        if agree:
            table.add_row(
                "speech given the same speaker as alone",
                " / ".join(f"{100 * a:.0f}%" for a in agree),
                "",
            )
        console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")


def _bench_latency(
    streams: int,
    data: Path | None,
    category: str,
    half: str,
    limit: int | None,
    settings: list[str],
    json_out: Path | None,
) -> None:
    """Word commit and first-visible latency of N real-time streams on a real server."""
    from hubbub.evaluation import word_latency
    from hubbub.evaluation.runner import load_manifest
    from hubbub.evaluation.splits import split_of

    root = data or _default_data()
    if root is None or not (root / "manifest.json").is_file():
        fail("no speech data: pass --data DIR (a folder with manifest.json)")
    if half not in ("tune", "test", "all"):
        fail(f"--half must be tune, test or all, not {half!r}")
    env = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("HUBBUB_"):
            fail(f"--set takes HUBBUB_NAME=value, not {item!r}")
        env[key] = value
    try:
        entries = load_manifest(root / "manifest.json", [category])
    except (ValueError, OSError) as exc:
        fail(f"{root / 'manifest.json'}: not a usable manifest ({exc})")
    entries = [e for e in entries if e.get("ref_text") and half in ("all", split_of(e["id"]))]
    entries = entries[:limit]
    if not entries:
        fail(f"no clips with a reference text in {category!r} ({half} half)")
    console = Console()
    console.print(
        f"[dim]{streams} stream(s) of {len(entries)} clips ({category}, {half} half) at the "
        "pace of speech against a transcriber process...[/]",
        highlight=False,
    )
    with native_stderr_silenced():
        res = word_latency.run(entries, root, streams, env)
    s = res.summary()
    table = Table(
        title=f"hubbub bench: when words show and turn final, {streams} stream(s) "
        f"x {s['audio_s_per_stream']:.0f} s, {s['words']} words in all"
    )
    for col in ("figure", "p50", "p95", "target"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    table.add_row(
        "word final after it was said",
        _s(s["commit_p50_s"]),
        _s(s["commit_p95_s"]),
        "p50 <= 2 s, p95 <= 4 s",
    )
    table.add_row(
        "word first shown after it was said",
        _s(s["visible_p50_s"]),
        _s(s["visible_p95_s"]),
        "p50 <= 0.7 s",
    )
    table.add_row("lag behind the audio", "", _s(s["lag_p95_s"]), "")
    cost = Table(show_header=True)
    cost.add_column("cost and accuracy")
    cost.add_column("value", justify="right")
    cost.add_row("WER of the finals", f"{100 * s['wer']:.1f}%")
    cost.add_row("server CPU cores", f"{s['cores']:.2f}")
    cost.add_row("server peak RSS", f"{s['peak_rss_mb']:.0f} MB")
    console.print(table)
    console.print(cost)
    if json_out is not None:
        report = {"machine": {"cpus": os.cpu_count(), "load_avg": _load()}, "latency": s}
        json_out.write_text(json.dumps(report, indent=2) + "\n")
