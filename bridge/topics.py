"""Creating missing topics: flowbridge's (jobs, events, runs, dlq) and kafka-workflow's."""

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
        # kafka-workflow's topics keep their own names (with the prefix): its clients know them.
        names = [(n, settings.topic(n)) for n in TOPICS]
        kw = (settings.kw_resume_topic, settings.kw_result_topic, settings.kw_error_topic)
        names.extend(("kw", settings.topic_prefix + t) for t in kw if t)
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
