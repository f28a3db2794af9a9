"""A ``rediss://`` REDIS_URL with a self-signed certificate (Heroku Redis) works as Celery's
broker and result backend: chords, which need the backend, complete."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowbridge.dev import Service
from tests.conftest import Isolation, Stack, require_binary

pytestmark = pytest.mark.e2e


def _openssl() -> str:
    from flowbridge.dev import ServiceUnavailable

    found = shutil.which("openssl")
    if found is None:
        raise ServiceUnavailable("openssl not found: apt-get install openssl")
    return found


class TlsProxy:
    """Terminates TLS with a self-signed certificate in front of a plain Redis."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(conn, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            conn.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def tls_redis(redis_service: Service, tmp_path: Path) -> Iterator[TlsProxy]:
    openssl = require_binary(_openssl)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=redis.invalid", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    proxy = TlsProxy(redis_service.port, cert, key)
    yield proxy
    proxy.close()


def test_rediss_url_with_a_self_signed_certificate_runs_chords(
    stack_factory: Callable[..., Stack], isolation: Isolation, tls_redis: TlsProxy
) -> None:
    db = isolation.redis_db_url.rsplit("/", 1)[1]
    stack = stack_factory(
        REDIS_URL=f"rediss://127.0.0.1:{tls_redis.port}/{db}",
        # The test nodes count their side effects over plain Redis, on the same database.
        E2E_REDIS_URL=isolation.redis_db_url,
    )
    stack.start_bridge()
    stack.start_worker()
    run = stack.client.start("diamond-chains", {}).result(timeout=60)
    assert run["status"] == "completed", run
    assert run["nodes"]["join"]["status"] == "completed"
    assert "ValueError" not in stack.logs(200)
