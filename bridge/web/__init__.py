"""The ``web`` process: an HTTP API (JSON, OpenAPI at ``/docs``) and a small web UI.

``python -m bridge.web`` serves ``create_app`` with uvicorn. It reads runs
through ``bridge.api.Queries`` and acts through ``bridge.api.Commands`` and
``bridge.api.DeadLetters``, as the CLI does; it never touches the consumer.
Everything but ``/healthz`` and ``/metrics`` is behind authentication
(``bridge.web.auth``), except that ``/webhooks/...`` takes a signed URL instead
when ``FLOWBRIDGE_WEBHOOK_SECRET`` is set (``bridge.web.webhooks``).
"""

from bridge.web.app import create_app
from bridge.web.settings import WebSettings

__all__ = ["WebSettings", "create_app"]
