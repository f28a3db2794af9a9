"""A throw-away PostgreSQL cluster for the DBOS scenario: ``initdb`` in a temp dir, a free port.

PostgreSQL refuses to run as root, so as root the cluster is created and run
as the ``postgres`` user (through ``runuser``, else ``su``). Any reason it
cannot run here raises ``ScenarioSkipped`` saying what to install.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from bench.harness import ScenarioSkipped
from flowbridge.dev import free_port

__all__ = ["Postgres", "find_initdb"]

PG_USER = "postgres"


def find_initdb() -> Path | None:
    """``initdb`` on PATH, else the newest Debian one (``/usr/lib/postgresql/N/bin``)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve()
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _as_postgres() -> list[str] | None:
    """Command prefix that runs a command as the postgres user (``[]`` when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", PG_USER, "--"]
    su = shutil.which("su")
    if su:
        return [su, PG_USER, "-s", "/bin/sh", "-c"]
    return None


class Postgres:
    """A PostgreSQL server in its own temp directory; ``url(db)`` gives a connection URL."""

    def __init__(self) -> None:
        initdb = find_initdb()
        if initdb is None:
            raise ScenarioSkipped(
                "skipped: PostgreSQL's initdb not found (apt-get install postgresql)"
            )
        prefix = _as_postgres()
        if prefix is None:
            raise ScenarioSkipped(
                "skipped: running as root without a 'postgres' user and runuser/su "
                "to run PostgreSQL as (it refuses to run as root)"
            )
        self._prefix = prefix
        self.bindir = initdb.parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="flowbridge-bench-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._started = False

    def _run(self, argv: list[str], timeout_s: float = 120) -> None:
        if self._prefix and self._prefix[-1] == "-c":  # su: one shell command
            cmd = [*self._prefix, shlex.join(argv)]
        else:
            cmd = [*self._prefix, *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise ScenarioSkipped(
                f"skipped: {Path(argv[0]).name} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._started = True
        atexit.register(self.stop)
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ]
        )
        return self

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(ScenarioSkipped, subprocess.TimeoutExpired):
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                    timeout_s=60,
                )
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
