"""A throwaway PostgreSQL server (Debian's `postgresql` package) on a free port, for tests.

``initdb`` a cluster in a temporary folder, start it with ``pg_ctl`` on 127.0.0.1, and
hand out one fresh database per test. PostgreSQL refuses to run as root: as root, the
cluster belongs to the `postgres` user the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support.servers import free_port


def _bindir() -> Path:
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
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.bindir = _bindir()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "hubbub",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
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
