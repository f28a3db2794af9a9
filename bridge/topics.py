"""Creating flowbridge's topics when they are missing (jobs, events, runs, dlq)."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from bridge.settings import BridgeSettings, KafkaSettings
from tasks.settings import Settings

__all__ = ["ensure_topics"]

log = logging.getLogger("flowbridge.bridge")

TOPICS = ("jobs", "events", "runs", "dlq")


def ensure_topics(kafka: KafkaSettings, settings: Settings, bridge: BridgeSettings) -> None:
    """Create missing topics; the DLQ accepts at least the jobs topic's largest message."""
    admin = KafkaAdminClient(**kafka.client_config())
    try:
        existing = set(admin.list_topics())
        # kafka-workflow's resume topic keeps its own name (with the prefix): producers know it.
        names = [(n, settings.topic(n)) for n in TOPICS]
        names.append(("kw", settings.topic_prefix + settings.kw_resume_topic))
        for name, full in names:
            if full in existing:
                continue
            configs = {"max.message.bytes": str(bridge.dlq_max_bytes)} if name == "dlq" else {}
            topic = NewTopic(
                full,
                num_partitions=bridge.topic_partitions,
                replication_factor=bridge.topic_replication,
                topic_configs=configs,
            )
            try:
                admin.create_topics([topic])
                log.info("created topic %s", full)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                # Managed clusters often forbid creation: then the topics must exist already.
                log.warning("could not create topic %s (%s); it must exist", full, exc)
    finally:
        admin.close()
