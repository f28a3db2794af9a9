"""The bridge's raw baseline: a kafka-python consumer that calls ``send_task`` for each record.

``python -m bench.rawconsumer --topic T --group G`` with ``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL`` and ``BENCH_REDIS_PREFIX`` in the environment. It uses the
consumer settings of flowbridge's bridge (``bridge/consumer.py``): no
auto-commit, ``fetch_max_wait_ms``, ``max_poll_records``, the same fetch sizes
and session, and a commit per partition batch after its tasks were sent. It
parses each value as JSON, as the bridge does, and sends
``value["task"]`` (default ``bench.noop``) with ``value["kwargs"]`` (default:
the run and node of a flowbridge ``node`` job) to the baseline's queue. It
does no validation, no state lookup and no dead-lettering: that is the
difference being measured.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from bench.apps import make_baseline_app

__all__ = ["main"]

_MIB = 1024 * 1024


class _Ready(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, path: str | None) -> None:
        self.path = path

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if self.path and assigned:
            Path(self.path).write_text(str(os.getpid()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawconsumer", description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=10)
    parser.add_argument("--max-poll-records", type=int, default=500)
    parser.add_argument("--session-timeout-ms", type=int, default=2000)
    parser.add_argument("--ready-file")
    args = parser.parse_args(argv)

    app = make_baseline_app(os.environ)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = KafkaConsumer(
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(","),
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=min(1000, args.session_timeout_ms // 3),
        max_poll_records=args.max_poll_records,
        max_partition_fetch_bytes=16 * _MIB,
        fetch_max_bytes=50 * _MIB,
    )
    consumer.subscribe([args.topic], listener=_Ready(args.ready_file))
    sent = 0
    try:
        while not stop.is_set():
            batch: dict[TopicPartition, list[Any]] = consumer.poll(timeout_ms=200)
            for tp, records in batch.items():
                for rec in records:
                    job = json.loads(rec.value)
                    kwargs = job.get("kwargs") or {"run_id": job["run_id"], "node_id": job["node"]}
                    app.send_task(job.get("task", "bench.noop"), kwargs=kwargs)
                    sent += 1
                consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)})
    finally:
        consumer.close(autocommit=False)
        print(f"rawconsumer: sent {sent} tasks", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
