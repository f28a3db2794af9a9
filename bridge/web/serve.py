"""Start-up of ``python -m bridge.web``: settings, the store, Kafka, uvicorn."""

from __future__ import annotations

import logging
import os

from state.errors import FlowbridgeError

__all__ = ["main"]

log = logging.getLogger("flowbridge.web")


def main() -> int:
    """Serve until stopped; exit 2 on bad configuration (no credentials, say)."""
    logging.basicConfig(
        level=os.environ.get("FLOWBRIDGE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every connection at INFO (the DLQ page reads the topic each time).
    logging.getLogger("kafka").setLevel(
        os.environ.get("FLOWBRIDGE_KAFKA_LOG_LEVEL", "WARNING").upper()
    )
    try:
        import uvicorn

        from bridge.api import Commands, DeadLetters, Queries
        from bridge.settings import BridgeSettings, KafkaSettings
        from bridge.web.app import Services, create_app
        from bridge.web.settings import WebSettings
        from bridge.web.webhooks import WebhookSettings
        from tasks.runtime import open_state
        from tasks.settings import Settings

        web = WebSettings.from_env()
        settings = Settings.from_env()
        kafka = KafkaSettings.from_env()
        store = open_state(settings)
        if store.auto_migrate:
            store.migrate()
        queries = Queries(store)
        services = Services(
            queries=queries,
            commands=Commands(settings=settings, kafka=kafka, queries=queries),
            dlq=DeadLetters(settings=settings, kafka=kafka),
        )
        hooks = WebhookSettings(
            secret=settings.webhook_secret,
            max_message_bytes=BridgeSettings.from_env().max_message_bytes,
        )
        app = create_app(services, web, hooks)
    except FlowbridgeError as exc:
        log.error("cannot start the web process: %s", exc)
        return 2
    mode = "local only, no authentication" if web.local_only else "authentication required"
    signed = "signed URLs" if hooks.secret else "the web's credentials"
    log.info("web on http://%s:%d (%s; webhooks: %s)", web.host, web.port, mode, signed)
    uvicorn.run(app, host=web.host, port=web.port, log_level="info", access_log=False)
    return 0
