"""Start-up of ``python -m bridge``: settings, user code, the consumer and the outbox relay."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from bridge.consumer import Bridge
from bridge.leases import ShardLeases
from bridge.relay import OutboxRelay
from bridge.reload import BlueprintWatcher
from bridge.settings import BridgeSettings, KafkaSettings
from state.errors import FlowbridgeError
from tasks.constants import OUTBOX_HINT_KEY
from tasks.loading import load_user_code
from tasks.settings import Settings
from tasks.worker import CeleryPort, reset_runtime, runtime_from_settings
from tasks.worker.port import publish_only
from tasks.worker.presence import Presence

__all__ = ["main"]

log = logging.getLogger("flowbridge.bridge")


def main() -> int:
    """Run the bridge until SIGTERM/SIGINT; exit 0 after draining, 2 on bad configuration."""
    logging.basicConfig(
        level=os.environ.get("FLOWBRIDGE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every connection and rebalance step at INFO.
    logging.getLogger("kafka").setLevel(
        os.environ.get("FLOWBRIDGE_KAFKA_LOG_LEVEL", "WARNING").upper()
    )
    try:
        settings = Settings.from_env()
        kafka = KafkaSettings.from_env()
        bridge_settings = BridgeSettings.from_env()
        runtime = runtime_from_settings(settings)
        reset_runtime(runtime)
        loaded = load_user_code(settings)
        runtime.ensure_schema()
    except FlowbridgeError as exc:
        log.error("cannot start the bridge: %s", exc)
        return 2
    log.info("blueprints: %s", ", ".join(sorted(f"{b.id}@{b.version}" for b in loaded)) or "none")
    watcher = None
    if settings.blueprint_dirs and bridge_settings.blueprints_reload_s > 0:
        watcher = BlueprintWatcher(
            registry=runtime.blueprints,
            directories=settings.blueprint_dirs,
            known_uses=runtime.nodes.names,
            max_delay_s=settings.max_delay_s,
            interval_s=bridge_settings.blueprints_reload_s,
        )
    port = runtime.port
    publish_only()  # no result subscription per task sent: nothing here waits on one
    assert isinstance(port, CeleryPort)
    presence = Presence(
        port.redis,
        settings,
        role="bridge",
        name=f"bridge@{socket.gethostname()}:{os.getpid()}",
        nodes=runtime.nodes.names(),
        blueprints=[f"{b.id}@{b.version}" for b in loaded],
    )
    presence.announce()
    presence.start_refresh()
    metrics = None
    if settings.metrics_port:
        from bridge.metrics import BridgeMetrics
        from tasks.worker.metrics import process_metrics, serve_metrics

        runtime.metrics = process_metrics()
        metrics = BridgeMetrics()
        serve_metrics(
            settings.metrics_port, multiprocess=bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        )
    bridge = Bridge(
        runtime=runtime, kafka=kafka, settings=bridge_settings, watcher=watcher, metrics=metrics
    )
    bridge.install_signal_handlers()
    leases = ShardLeases(
        port.redis,
        prefix=settings.redis_prefix,
        hint_key=settings.redis_prefix + OUTBOX_HINT_KEY,
        lease_s=bridge_settings.outbox_lease_s,
        member=f"bridge@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
    )
    relay = OutboxRelay(
        store=runtime.store,
        wait_hint=leases.wait_for_hint,
        leases=leases,
        kafka=kafka,
        settings=bridge_settings,
        metrics=metrics,
    )
    relay.start()
    try:
        return bridge.run()
    finally:
        relay.stop(timeout=bridge_settings.shutdown_s)
        presence.withdraw()
