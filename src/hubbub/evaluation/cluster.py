"""A small cluster on this machine, from Debian's packages: a PostgreSQL server, N
transcriber replicas sharing it, and nginx in front of them as the load balancer.

Tests and benchmarks use it to do to replicas what happens in a deployment (kill one,
fill one) with the real parts: ``initdb``/``pg_ctl`` start a throwaway cluster on a free
port (as the `postgres` user when we are root: PostgreSQL refuses to run as root), nginx
runs with a config of our own in a temporary folder, and each replica is a
``hubbub transcriber`` process (``spawn``, which load tests and other tests use too).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(
    proc: subprocess.Popen, url: str, what: str, wait_s: float = 120.0, any_answer: bool = False
) -> Iterator[subprocess.Popen]:
    """``proc`` for the ``with`` block, once ``url`` answers (200, or anything with
    ``any_answer``); stopped after it."""
    try:
        deadline = time.monotonic() + wait_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(url, timeout=1).status_code
                if any_answer or status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{what} did not start {err}".strip())
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def spawn(
    command: list[str], env: dict[str, str], health_url: str
) -> contextlib.AbstractContextManager[subprocess.Popen]:
    """Run a hubbub service in its own process, from when it answers /health."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubbub", *command],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return serving(proc, health_url, f"hubbub {command[0]}")


def _pg_bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(versions[-1]).parent


class Postgres:
    """A PostgreSQL server in ``root``; one fresh database per caller."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.bindir = _pg_bindir()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.root / "data"
        initdb = str(self.bindir / "initdb")
        self._run(initdb, "-D", str(data), "-U", "hubbub", "--auth=trust", "--no-sync")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.root / "server.log"
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "start")

    def stop(self) -> None:
        pg_ctl = str(self.bindir / "pg_ctl")
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://hubbub@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    # Its own folder under /tmp: pytest's are private to root, and the server may run as
    # the `postgres` user.
    root = Path(tempfile.mkdtemp(prefix="hubbub-pg-"))
    server = Postgres(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


NGINX_CONF = """\
{user}
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream transcribers {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://transcribers;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_connect_timeout 2s;
            # A replica that is down (refused, reset) is skipped for the next one.
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(backends: list[int], port: int | None = None) -> Iterator[str]:
    """nginx on a free port, balancing HTTP and WebSockets over ``backends`` (ports on
    127.0.0.1, round robin); yields its base URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed (apt-get install nginx)")
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="hubbub-nginx-"))
    servers = "\n".join(
        f"        server 127.0.0.1:{b} max_fails=1 fail_timeout=3s;" for b in backends
    )
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, root=root, servers=servers, port=port))
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with serving(proc, f"http://127.0.0.1:{port}/", "nginx", 20, any_answer=True):
            yield f"http://127.0.0.1:{port}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Replicas:
    """``hubbub transcriber`` processes sharing one database, each on its own port; any
    one can be killed (SIGKILL) and started again on its port."""

    def __init__(self, database_url: str, n: int, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.ports = [free_port() for _ in range(n)]
        self.env = env or {}
        self._stack = contextlib.ExitStack()
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, port: int) -> subprocess.Popen:
        env = {
            "HUBBUB_ENGINE": "cpu",
            "HUBBUB_PORT": str(port),
            "HUBBUB_DATABASE_URL": self.database_url,
            "HUBBUB_TRUSTED_PROXIES": '["127.0.0.1"]',  # nginx and the web app
            **self.env,
        }
        proc = self._stack.enter_context(
            spawn(["transcriber"], env, f"http://127.0.0.1:{port}/health")
        )
        self.procs[port] = proc
        return proc

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def holding(self) -> list[int]:
        """Ports of replicas with a live session now."""
        out = []
        for port in self.procs:
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                if health.get("sessions", 0) > 0:
                    out.append(port)
        return out

    def __enter__(self) -> Replicas:
        for port in self.ports:
            self.start(port)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
