"""Generated hostile records through one real bridge: it never stops, every bad record is in
the DLQ unchanged with a reason, every offset is committed, and a good run afterwards completes.

``FLOWBRIDGE_FUZZ_RECORDS`` records (600 in ``make test``, 10,000 in ``make fuzz``), from
``FLOWBRIDGE_FUZZ_SEED`` (printed, so a failure can be replayed).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Stack, on_both_brokers
from tests.fuzz.records import MAX_BYTES, generate

pytestmark = pytest.mark.e2e

COUNT = int(os.environ.get("FLOWBRIDGE_FUZZ_RECORDS", "600"))
SEED = int(os.environ.get("FLOWBRIDGE_FUZZ_SEED", "15"))


def _read_all(stack: Stack, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"],
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=16 << 20,
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"topic {topic} has no partitions"
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "the DLQ did not read to its end"
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def _lagging(stack: Stack, group: str, topics: list[str]) -> dict[str, tuple[int | None, int]]:
    """Partitions whose committed offset is short of their end: name -> (committed, end)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=group,
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(tps)
        committed = {tp: consumer.committed(tp) for tp in tps}
        return {
            f"{tp.topic}:{tp.partition}": (committed[tp], ends[tp])
            for tp in tps
            if ends[tp] > 0 and (committed[tp] or 0) < ends[tp]
        }
    finally:
        consumer.close(autocommit=False)


@on_both_brokers
def test_generated_bad_records_all_reach_the_dlq_and_the_bridge_goes_on(
    stack_factory: Callable[..., Stack],
) -> None:
    from kafka import KafkaProducer

    stack = stack_factory(FLOWBRIDGE_MAX_MESSAGE_BYTES=str(MAX_BYTES))
    stack.start_bridge()
    stack.start_worker()
    settings = stack.settings
    topics = {
        "jobs": settings.topic("jobs"),
        "events": settings.topic("events"),
        "kw": settings.topic_prefix + settings.kw_resume_topic,
    }
    records = generate(COUNT, seed=SEED)
    print(f"fuzz: {COUNT} records, seed {SEED}: {Counter(r.kind.split(':')[0] for r in records)}")
    producer = KafkaProducer(
        bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"],
        acks="all",
        linger_ms=5,
        max_request_size=8 << 20,
    )
    try:
        futures = [
            producer.send(topics[r.topic], key=r.key, value=r.value, headers=r.headers)
            for r in records
        ]
        producer.flush(timeout=120)
        sent = {
            (m.topic, m.partition, m.offset): r
            for r, m in zip(records, (f.get(timeout=60) for f in futures), strict=True)
        }
    finally:
        producer.close(timeout=10)
    started = time.monotonic()

    good = stack.client.start("linear", {"after": "fuzz"})
    assert good.result(timeout=120)["status"] == "completed", "the bridge kept consuming"
    group = settings.topic_prefix + "flowbridge.bridge"
    stack.wait_for(
        lambda: not _lagging(stack, group, list(topics.values())),
        timeout=180,
        what=f"every offset committed (lagging: {_lagging(stack, group, list(topics.values()))})",
    )
    elapsed = time.monotonic() - started

    dlq: dict[tuple[str, int, int], Any] = {}
    for rec in _read_all(stack, settings.topic("dlq")):
        h = {k: bytes(v).decode(errors="replace") for k, v in rec.headers}
        where = (
            h["flowbridge-source-topic"],
            int(h["flowbridge-source-partition"]),
            int(h["flowbridge-source-offset"]),
        )
        assert where not in dlq, f"dead-lettered twice: {where}"
        dlq[where] = (rec, h["flowbridge-error"])
    reasons = Counter(reason.split(":")[0][:60] for _, reason in dlq.values())
    print(f"fuzz: {len(dlq)} dead-lettered in {elapsed:.1f}s; reasons: {reasons.most_common(25)}")

    missing = [(w, r.kind) for w, r in sent.items() if not r.may_accept and w not in dlq]
    assert not missing, f"bad records not in the DLQ: {missing[:10]}"
    for where, (rec, reason) in dlq.items():
        assert where in sent, f"a DLQ record from nowhere: {where}"
        assert reason.strip() and not reason.startswith("internal error"), (sent[where], reason)
        assert rec.value == sent[where].value, "dead-lettered unchanged"
    assert stack.procs["bridge"].poll() is None, "bad input never stops the bridge"
    assert "Traceback" not in (stack.iso.tmp_path / "bridge.log").read_text(errors="replace")
