"""The two services as Flyte 2 apps: a GPU transcriber and a CPU web app that calls it.

``transcriber_env`` serves the transcriber (the ``nemo`` engine on a GPU; replicas scale
on concurrent streams); ``web_env`` serves the UI and relay, ``depends_on`` the transcriber
(so deploying it deploys both) and finds it through ``transcriber_env.endpoint`` unless
``HUBBUB_TRANSCRIBER_URL`` says otherwise.

Configuration: ``FlyteDeployConfig`` reads ``HUBBUB_FLYTE_*`` variables when this module
is imported; ``configure(config)`` re-applies another one to the same module-level envs
(what ``hubbub deploy flyte`` does with its flags). Flyte needs the envs and their FastAPI
apps as module globals: a deployed container imports this module and looks them up.

The services themselves read ``HUBBUB_*`` settings when their server starts, not at import
(``LateApp``), so ``env_vars`` given to Flyte's local mode apply, and importing this module
never loads the engine, torch or NeMo.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flyte
import flyte.app
from fastapi import FastAPI
from flyte.app.extras import FastAPIAppEnvironment
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hubbub.settings import Settings

SRC_DIR = Path(__file__).resolve().parents[2]  # flyte.init(root_dir=SRC_DIR): module hubbub.*
PACKAGE_DIR = SRC_DIR / "hubbub"
PYPROJECT = SRC_DIR.parent / "pyproject.toml"
PYTHON = (3, 11)
TRANSCRIBER_NAME = "hubbub-transcriber"
WEB_NAME = "hubbub-web"
REPLICAS = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")


class DeployError(RuntimeError):
    """Something to fix on this side before deploying (said in one line)."""


def parse_replicas(text: str) -> tuple[int, int]:
    """``"2"`` -> (2, 2); ``"1:4"`` -> (1, 4): min and max replicas."""
    m = REPLICAS.match(text)
    if m is None:
        raise ValueError(f"replicas must be N or MIN:MAX, got {text!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < 1 or hi < lo:
        raise ValueError(f"replicas {text!r}: need MAX >= 1 and MAX >= MIN")
    return lo, hi


class FlyteDeployConfig(BaseSettings):
    """What ``hubbub deploy flyte`` varies; ``HUBBUB_FLYTE_*`` variables, flags over them."""

    model_config = SettingsConfigDict(env_prefix="HUBBUB_FLYTE_", extra="ignore")

    gpu: str = Field("A10G:1", description='Transcriber GPU, "TYPE:N"; "none" = CPU engine')
    cpu: str = Field("4", description="Transcriber CPU request")
    memory: str = Field("16Gi", description="Transcriber memory request")
    replicas: str = Field("1:2", description="Transcriber replicas, N or MIN:MAX")
    concurrency: int = Field(8, ge=1, description="Streams per transcriber replica before scaling")
    scaledown_after_s: int = Field(600, ge=0, description="Idle time before a replica goes")
    request_timeout_s: int = Field(3600, ge=1, le=3600, description="Longest WebSocket (max 1 h)")
    web_cpu: str = "1"
    web_memory: str = "1Gi"
    web_replicas: str = "1:2"
    web_concurrency: int = Field(100, ge=1, description="Browser streams per web replica")
    transcriber_port: int = 8765
    web_port: int = 8080
    requires_auth: bool = Field(True, description="Flyte authenticates every request")
    api_key_secret: str | None = Field(
        None, description="Flyte secret holding the service API key (HUBBUB_API_KEY), if any"
    )
    database_secret: str | None = Field(
        None,
        description="Flyte secret holding the transcript store's URL (HUBBUB_DATABASE_URL, "
        "e.g. a managed PostgreSQL) that all transcriber replicas share",
    )

    def store_warning(self) -> str | None:
        """What a user should know about where transcripts are kept, if anything."""
        if self.database_secret or parse_replicas(self.replicas)[1] <= 1:
            return None
        return (
            "transcriber replicas keep their own SQLite stores: history differs by replica "
            "and goes with it; pass --database-secret with a PostgreSQL URL to share one"
        )

    @field_validator("replicas", "web_replicas")
    @classmethod
    def _replicas(cls, v: str) -> str:
        parse_replicas(v)
        return v

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str) -> str:
        if v.lower() in ("", "none", "0"):
            return "none"
        try:
            flyte.Resources(gpu=v)  # type: ignore[arg-type]
        except ValueError:
            raise ValueError(f"unknown GPU {v!r}: use TYPE:N, e.g. A10G:1, L4:1, H100:1") from None
        return v

    @property
    def uses_gpu(self) -> bool:
        return self.gpu != "none"


# -- the FastAPI apps: module globals, built when their server starts ------------------------


class LateApp(FastAPI):
    """A FastAPI app that builds the real one when its server starts, and forwards to it.

    Flyte needs an app object at import; the services read their settings from the
    environment, which Flyte's local mode only fills in when it serves the app. The real
    app is also never pickled with the deployment plan.
    """

    def __init__(self, build: Callable[[], FastAPI], title: str) -> None:
        self.build = build
        self.inner: FastAPI | None = None
        super().__init__(
            title=title, lifespan=self._lifespan, openapi_url=None, docs_url=None, redoc_url=None
        )

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI):
        inner = self.build()
        async with inner.router.lifespan_context(inner):
            self.inner = inner
            yield
        self.inner = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or self.inner is None:
            await super().__call__(scope, receive, send)
        else:
            await self.inner(scope, receive, send)


def build_transcriber() -> FastAPI:
    from hubbub.transcriber.app import create_app

    return create_app(Settings())


def transcriber_url(settings: Settings) -> str:
    """An explicit ``HUBBUB_TRANSCRIBER_URL`` wins; else Flyte resolves the transcriber app
    (localhost in local mode, the cluster-internal URL inside a deployed app)."""
    if "transcriber_url" in settings.model_fields_set:
        return settings.transcriber_url
    return transcriber_env.endpoint


def build_web() -> FastAPI:
    from hubbub.web.app import create_app

    settings = Settings()
    return create_app(settings.model_copy(update={"transcriber_url": transcriber_url(settings)}))


transcriber_app = LateApp(build_transcriber, "hubbub transcriber")
web_app = LateApp(build_web, "hubbub web")


# -- images, resources, scaling -----------------------------------------------------------------


def image(name: str, *extras: str) -> flyte.Image:
    """Debian + Python + the project's dependencies (uv, from pyproject.toml; the wheels
    carry libsndfile and FFmpeg). The hubbub code travels in the code bundle, so changing
    it does not rebuild the image."""
    base = flyte.Image.from_debian_base(python_version=PYTHON, name=name)
    args = " ".join(f"--extra {e}" for e in extras)
    return base.with_uv_project(PYPROJECT, extra_args=args or None)


def scaling(replicas: str, concurrency: int, scaledown_after_s: int) -> flyte.app.Scaling:
    return flyte.app.Scaling(
        replicas=parse_replicas(replicas),
        metric=flyte.app.Scaling.Concurrency(concurrency),
        scaledown_after=scaledown_after_s or None,
    )


def secrets(config: FlyteDeployConfig, transcriber: bool) -> list[flyte.Secret] | None:
    out = []
    if config.api_key_secret:
        out.append(flyte.Secret(key=config.api_key_secret, as_env_var="HUBBUB_API_KEY"))
    if transcriber and config.database_secret:
        out.append(flyte.Secret(key=config.database_secret, as_env_var="HUBBUB_DATABASE_URL"))
    return out or None


# The whole package (all engines, the static UI): the default bundle holds only the
# modules imported at deploy time, and the services import theirs lazily.
INCLUDE = (str(PACKAGE_DIR),)

transcriber_env = FastAPIAppEnvironment(
    name=TRANSCRIBER_NAME,
    app=transcriber_app,
    description="hubbub transcriber: streaming diarization + ASR over WebSocket",
    include=INCLUDE,
)
web_env = FastAPIAppEnvironment(
    name=WEB_NAME,
    app=web_app,
    description="hubbub web app: UI and relay to the transcriber",
    depends_on=[transcriber_env],
    include=INCLUDE,
)


# Behind Flyte's ingress (and its login), the apps are reached by cluster names that we
# cannot list in advance, and every hop before them (the ingress, the web app's relay)
# has a private address: those are the proxies whose X-Forwarded-For is believed.
IN_CLUSTER = {
    "HUBBUB_ALLOWED_HOSTS": '["*"]',
    "HUBBUB_TRUSTED_PROXIES": '["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.1"]',
}


def configure(config: FlyteDeployConfig) -> None:
    """Apply ``config`` to ``transcriber_env`` and ``web_env`` in place (they stay the
    module globals a deployed container looks up)."""
    t, w = transcriber_env, web_env
    gpu = config.gpu if config.uses_gpu else None
    extras = ["nemo"] if config.uses_gpu else []
    extras += ["postgres"] if config.database_secret else []
    t.image = image(TRANSCRIBER_NAME, *extras)
    t.resources = flyte.Resources(cpu=config.cpu, memory=config.memory, gpu=gpu)  # type: ignore[arg-type]
    t.scaling = scaling(config.replicas, config.concurrency, config.scaledown_after_s)
    t.env_vars = {"HUBBUB_ENGINE": "nemo" if config.uses_gpu else "cpu", **IN_CLUSTER}
    w.image = image(WEB_NAME)
    w.resources = flyte.Resources(cpu=config.web_cpu, memory=config.web_memory)
    w.scaling = scaling(config.web_replicas, config.web_concurrency, config.scaledown_after_s)
    w.env_vars = dict(IN_CLUSTER)
    for env, port in ((t, config.transcriber_port), (w, config.web_port)):
        env.port = flyte.app.Port(port=port)
        env.timeouts = flyte.app.Timeouts(request=config.request_timeout_s)
        env.requires_auth = config.requires_auth
        env.secrets = secrets(config, transcriber=env is t)


CONFIG = FlyteDeployConfig()
configure(CONFIG)


# -- deploying -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppPlan:
    """One app as Flyte would create it, read back from the app spec it serialised."""

    name: str
    image: str
    cpu: str
    memory: str
    gpu: str | None  # "nvidia-a10g x1"
    replicas: tuple[int, int]
    concurrency: int | None
    scaledown_after_s: int | None
    request_timeout_s: int | None
    requires_auth: bool
    port: int
    env: dict[str, str]
    secrets: tuple[str, ...]
    depends_on: tuple[str, ...]
    module: str  # what the container imports: "hubbub.deploy.flyte_apps:web_env"
    bundle: str  # the code bundle (a local .tar.gz in a dry run)
    endpoint: str  # the public URL once deployed; "" in a dry run


def _plan(env: FastAPIAppEnvironment, app: Any) -> AppPlan:
    spec = app.pb2.spec
    c = spec.container
    requests = {flyte_resource_name(r.name): r.value for r in c.resources.requests}
    accel = spec.extended_resources.gpu_accelerator.device
    scaling = spec.autoscaling
    cmd = list(c.command)

    def arg(flag: str) -> str:
        return cmd[cmd.index(flag) + 1] if flag in cmd else ""

    metric = scaling.scaling_metric
    return AppPlan(
        name=app.name,
        image=c.image,
        cpu=requests.get("cpu", ""),
        memory=requests.get("memory", ""),
        gpu=f"{accel} x{requests.get('gpu', '1')}" if accel else None,
        replicas=(scaling.replicas.min, scaling.replicas.max),
        concurrency=metric.concurrency.target_value if metric.HasField("concurrency") else None,
        scaledown_after_s=scaling.scaledown_period.seconds or None,
        request_timeout_s=spec.timeouts.request_timeout.seconds or None,
        requires_auth=not spec.security_context.allow_anonymous,
        port=c.ports[0].container_port if c.ports else 0,
        env={e.key: e.value for e in c.env if not e.key.startswith("_")},
        secrets=tuple(s.key for s in spec.security_context.secrets),
        depends_on=tuple(d.name for d in env.depends_on),
        module=arg("--resolver-args"),
        bundle=arg("--tgz") or app.pb2.metadata.code_bundle_uri,
        endpoint=app.endpoint,
    )


def flyte_resource_name(code: int) -> str:
    from flyteidl2.core import tasks_pb2

    return tasks_pb2.Resources.ResourceName.Name(code).lower()


def _uv_on_path() -> None:
    """Flyte's image builder runs ``uv`` (from PATH) on pyproject.toml; the ``flyte`` extra
    installs it beside this Python, which need not be on PATH."""
    if shutil.which("uv"):
        return
    try:
        from uv import find_uv_bin
    except ImportError:
        raise DeployError("building the images needs uv: pip install 'hubbub[flyte]'") from None
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(find_uv_bin()), os.environ["PATH"]])


def deploy(config: FlyteDeployConfig | None = None, *, dry_run: bool = False) -> list[AppPlan]:
    """Deploy the web app and, through ``depends_on``, the transcriber.

    A dry run plans both apps and builds the code bundle with no cluster (``flyte.init()``);
    otherwise ``.flyte/config.yaml`` (or ``FLYTE_CONFIG``) says where to deploy.
    """
    if not PYPROJECT.is_file():  # the images install the dependencies it lists
        raise DeployError(f"deploy from a source checkout: no {PYPROJECT}")
    configure(config or CONFIG)
    if dry_run:
        flyte.init(root_dir=SRC_DIR)
    else:
        flyte.init_from_config(root_dir=SRC_DIR)
        if not flyte.is_control_plane_available():  # no config found: fail before bundling
            raise DeployError(
                "no Flyte cluster configured: run `flyte create config --endpoint ...` "
                "(writes .flyte/config.yaml) or set FLYTE_CONFIG"
            )
        _uv_on_path()
    envs = {e.name: e for e in (transcriber_env, web_env)}
    plans = [
        _plan(envs[name], deployed.deployed_app)
        for deployment in flyte.deploy(web_env, dry_run=dry_run)
        for name, deployed in deployment.envs.items()
    ]
    order = [TRANSCRIBER_NAME, WEB_NAME]
    return sorted(plans, key=lambda p: order.index(p.name) if p.name in order else len(order))
