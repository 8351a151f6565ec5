"""The Flyte apps without a cluster: a dry-run deploy plans both apps offline, and Flyte's
local mode serves both, the web app finding the transcriber through ``endpoint`` and
relaying a real conversation to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner
from websockets.sync.client import connect

from hubbub.settings import Settings

from support.servers import free_port

os.environ.setdefault("DO_NOT_TRACK", "1")  # the SDK otherwise tries to send crash reports
flyte = pytest.importorskip("flyte")

from hubbub.deploy import flyte_apps as apps  # noqa: E402

START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}


# -- the module ------------------------------------------------------------------------------


def test_importing_the_apps_loads_no_engine():
    code = (
        "import sys, hubbub.deploy.flyte_apps as m; "
        "heavy = [n for n in ('torch', 'nemo', 'ctranslate2', 'faster_whisper', 'onnxruntime', "
        "'hubbub.engines.cpu.engine', 'hubbub.transcriber.app') if n in sys.modules]; "
        "print(heavy, type(m.web_env).__name__, m.web_env.app is m.web_app)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[] FastAPIAppEnvironment True"


def test_config_parsing_and_validation():
    assert apps.parse_replicas("3") == (3, 3)
    assert apps.parse_replicas(" 0 : 4 ") == (0, 4)
    for bad in ("", "4:1", "a:b", "0"):
        with pytest.raises(ValueError):
            apps.parse_replicas(bad)
    assert apps.FlyteDeployConfig(gpu="none").uses_gpu is False
    with pytest.raises(ValueError, match="unknown GPU"):
        apps.FlyteDeployConfig(gpu="A10G")
    with pytest.raises(ValueError):
        apps.FlyteDeployConfig(request_timeout_s=7200)  # Flyte's limit is 1 h


def test_explicit_transcriber_url_wins_over_endpoint(monkeypatch):
    assert apps.transcriber_url(Settings(transcriber_url="http://tr:1")) == "http://tr:1"
    monkeypatch.setenv("HUBBUB_TRANSCRIBER_URL", "https://tr.example")
    assert apps.transcriber_url(Settings()) == "https://tr.example"
    monkeypatch.delenv("HUBBUB_TRANSCRIBER_URL")
    # Inside a deployed app Flyte sets the internal endpoint pattern.
    monkeypatch.setenv("INTERNAL_APP_ENDPOINT_PATTERN", "http://{app_fqdn}.apps.svc:80")
    monkeypatch.setenv("_RUN_MODE", "remote")
    assert apps.transcriber_url(Settings()) == "http://hubbub-transcriber.apps.svc:80"


# -- dry run -----------------------------------------------------------------------------------


def test_dry_run_plans_both_apps_offline():
    config = apps.FlyteDeployConfig(
        gpu="L4:1", replicas="1:4", concurrency=6, cpu="6", memory="24Gi", api_key_secret="hk"
    )
    t0 = time.monotonic()
    transcriber, web = apps.deploy(config, dry_run=True)
    took = time.monotonic() - t0
    print(f"dry-run deploy planned in {took:.2f} s")

    assert transcriber.name == "hubbub-transcriber" and web.name == "hubbub-web"
    assert transcriber.image.startswith("hubbub-transcriber:")
    assert web.image.startswith("hubbub-web:") and web.image != transcriber.image
    assert (transcriber.cpu, transcriber.memory, transcriber.gpu) == ("6", "24Gi", "nvidia-l4 x1")
    assert transcriber.replicas == (1, 4) and transcriber.concurrency == 6
    assert transcriber.env == {"HUBBUB_ENGINE": "nemo", **apps.IN_CLUSTER}
    assert web.env == apps.IN_CLUSTER  # cluster names; private hops are the proxies
    assert web.gpu is None and web.cpu == "1"
    for plan in (transcriber, web):
        assert plan.request_timeout_s == 3600 and plan.requires_auth
        assert plan.scaledown_after_s == 600
        assert plan.secrets == ("hk",)
    assert web.depends_on == ("hubbub-transcriber",) and transcriber.depends_on == ()
    assert transcriber.module == "hubbub.deploy.flyte_apps:transcriber_env"
    assert web.module == "hubbub.deploy.flyte_apps:web_env"
    assert transcriber.endpoint == "" and took < 30
    assert config.store_warning() is not None  # up to 4 replicas, each with its own SQLite


def test_replicas_can_share_a_database_from_a_secret():
    config = apps.FlyteDeployConfig(replicas="1:4", api_key_secret="hk", database_secret="db")
    transcriber, web = apps.deploy(config, dry_run=True)
    assert transcriber.secrets == ("hk", "db") and web.secrets == ("hk",)
    assert config.store_warning() is None
    assert apps.FlyteDeployConfig(replicas="1").store_warning() is None

    # One bundle for both: the whole package, lazily imported engines and the UI included.
    assert web.bundle == transcriber.bundle
    with tarfile.open(web.bundle) as tar:
        names = set(tar.getnames())
    for name in (
        "hubbub/deploy/flyte_apps.py",
        "hubbub/transcriber/live.py",
        "hubbub/engines/cpu/engine.py",
        "hubbub/web/static/index.html",
        "hubbub/web/static/app.js",
    ):
        assert name in names, name
    assert not any("__pycache__" in n for n in names)


def test_a_cpu_only_transcriber_has_no_gpu_and_no_nemo():
    transcriber, _ = apps.deploy(apps.FlyteDeployConfig(gpu="none", replicas="0:1"), dry_run=True)
    assert transcriber.gpu is None and transcriber.env["HUBBUB_ENGINE"] == "cpu"
    assert transcriber.replicas == (0, 1)
    nemo_image = apps.image(apps.TRANSCRIBER_NAME, "nemo").uri
    assert transcriber.image != nemo_image


def test_cli_dry_run_prints_a_readable_plan():
    from hubbub.cli import app

    result = CliRunner().invoke(
        app, ["deploy", "flyte", "--dry-run", "--gpu", "A10G:1", "--replicas", "1:4"]
    )
    assert result.exit_code == 0, result.output
    for text in ("hubbub-transcriber", "hubbub-web", "nvidia-a10g", "1-4", "depends on"):
        assert text in result.output, result.output
    assert "{" not in result.output, "a table, not raw JSON"

    bad = CliRunner().invoke(app, ["deploy", "flyte", "--dry-run", "--replicas", "4:1"])
    assert bad.exit_code == 2 and "--replicas" in bad.output


def test_cli_without_a_cluster_config_says_how_to_make_one(monkeypatch):
    from hubbub.cli import app

    monkeypatch.setattr(flyte, "init_from_config", lambda **_: None)  # found no config
    monkeypatch.setattr(flyte, "is_control_plane_available", lambda: False)
    result = CliRunner().invoke(app, ["deploy", "flyte"])
    assert result.exit_code == 2 and "flyte create config" in result.output, result.output


# -- local mode --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_apps(tmp_path_factory) -> Iterator[tuple[str, str, float]]:
    """Both apps served by Flyte's local mode (threads in this process), the CPU engine.

    Session-scoped: ``deactivate`` leaves the ports bound."""
    apps.configure(
        apps.FlyteDeployConfig(gpu="none", transcriber_port=free_port(), web_port=free_port())
    )
    env_vars = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(tmp_path_factory.mktemp("flyte-store")),
        "HUBBUB_MAX_SESSIONS": "2",
        "DO_NOT_TRACK": "1",
    }
    saved = dict(os.environ)
    os.environ.pop("HUBBUB_TRANSCRIBER_URL", None)  # the web app must use endpoint resolution
    t0 = time.monotonic()
    serving = flyte.with_servecontext(mode="local", env_vars=env_vars, health_check_interval=0.1)
    handles = []
    try:
        for env in (apps.transcriber_env, apps.web_env):  # depends_on starts nothing locally
            handles.append(serving.serve(env))
            handles[-1].activate(wait=True)
        startup = time.monotonic() - t0
    finally:
        # The services have read their settings; the rest of the run must not see ours.
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)
    transcriber, web = handles
    yield transcriber.endpoint, web.endpoint, startup
    for handle in reversed(handles):
        handle.deactivate(wait=True)


@pytest.mark.slow
def test_local_mode_serves_both_apps_and_relays_a_conversation(local_apps, speech_dir):
    from hubbub.audio import float_to_pcm16
    from hubbub.decode import load_audio

    transcriber_url, web_url, startup = local_apps
    print(f"local mode: both apps up in {startup:.2f} s")
    status = httpx.get(web_url + "/status").json()
    assert status["transcriber"]["url"] == transcriber_url, "found through env.endpoint"
    assert status["transcriber"]["reachable"] and status["transcriber"]["health"]["engine"] == "cpu"
    assert "<title>hubbub" in httpx.get(web_url + "/").text

    pcm = float_to_pcm16(load_audio(speech_dir / "Picovoice-falcon/falcon_test.flac"))
    t0 = time.monotonic()
    with connect(web_url.replace("http://", "ws://") + "/ws") as ws:
        ws.send(json.dumps({**START, "max_speakers": 4}))
        ready = json.loads(ws.recv(timeout=30))
        for i in range(0, len(pcm), 3200):
            ws.send(pcm[i : i + 3200])
            time.sleep(0.02)  # ~5x real time
        ws.send(json.dumps({"type": "stop"}))
        msgs = []
        while (msg := json.loads(ws.recv(timeout=60)))["type"] != "ended":
            msgs.append(msg)
    print(f"18.6 s clip through the local-mode apps in {time.monotonic() - t0:.1f} s")

    assert ready["type"] == "ready" and ready["engine"] == "cpu"
    assert msg["audio_processed_s"] == pytest.approx(len(pcm) / 32000, abs=0.002)
    finals = [s for m in msgs if m["type"] == "transcript" for s in m["finals"]]
    speakers = {s["speaker"] for s in finals}
    words = " ".join(s["text"] for s in finals).split()
    assert len(speakers) == 3, speakers
    assert len(words) >= 30
    stored = httpx.get(web_url + f"/api/sessions/{ready['session_id']}", params={"format": "srt"})
    assert stored.status_code == 200 and "-->" in stored.text
