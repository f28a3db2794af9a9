"""The dead-letter queue as operators see it: list, show and replay ``<prefix>flowbridge.dlq``.

The bridge writes a record it cannot accept to the DLQ unchanged, with
``flowbridge-error`` (why) and ``flowbridge-source-topic/-partition/-offset``
(where it came from). ``DeadLetters`` reads the topic without a consumer group
(nothing is committed; listing twice shows the same records) and replays a
record by producing it again, key and value unchanged, to its source topic
with ``flowbridge-replay-of: topic:partition:offset`` of the original.

Replays are idempotent by that original: the bridge names what a record
creates by the original's position when the header is there (a start without
a run id gets the run id the original would have had; an event without an id
the same event id), and node, cancel, retry, pause and resume jobs are
idempotent themselves. Replaying one record twice, or two DLQ copies of one
original (it failed again after a replay), starts one run and delivers one event.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from bridge.errors import DeadLetterError, KafkaUnavailableError
from bridge.headers import REPLAY_HEADER
from bridge.settings import KafkaSettings
from tasks.settings import Settings

__all__ = ["REPLAY_HEADER", "DeadLetter", "DeadLetters"]

#: How long a read of the DLQ waits for the broker before giving up.
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One record of the DLQ, with where it came from and why it is there."""

    partition: int
    offset: int
    #: When the bridge dead-lettered it (seconds since the epoch).
    timestamp: float
    key: bytes | None
    value: bytes
    reason: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    #: The original this record is a failed replay of (``topic:partition:offset``), if any.
    replay_of: str | None = None

    @property
    def ref(self) -> str:
        """How ``dlq show`` and ``dlq replay --offset`` name it: ``partition:offset``."""
        return f"{self.partition}:{self.offset}"

    @property
    def origin(self) -> str:
        """``topic:partition:offset`` of the original record (replays share it)."""
        if self.replay_of:
            return self.replay_of
        return f"{self.source_topic}:{self.source_partition}:{self.source_offset}"

    def json(self) -> dict[str, Any]:
        """The record as JSON: its value as text (or base64 when it is not UTF-8)."""
        try:
            value: dict[str, Any] = {"value": self.value.decode()}
        except UnicodeDecodeError:
            value = {"value_base64": base64.b64encode(self.value).decode()}
        return {
            "ref": self.ref,
            "partition": self.partition,
            "offset": self.offset,
            "at": self.timestamp,
            "reason": self.reason,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "replay_of": self.replay_of,
            "key": None if self.key is None else self.key.decode(errors="replace"),
            **value,
        }


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _letter(rec: Any) -> DeadLetter:
    headers = {k: bytes(v).decode(errors="replace") for k, v in (rec.headers or ()) if v}
    return DeadLetter(
        partition=rec.partition,
        offset=rec.offset,
        timestamp=rec.timestamp / 1000.0,
        key=rec.key,
        value=rec.value or b"",
        reason=headers.get("flowbridge-error", ""),
        source_topic=headers.get("flowbridge-source-topic", ""),
        source_partition=_int(headers.get("flowbridge-source-partition")),
        source_offset=_int(headers.get("flowbridge-source-offset")),
        replay_of=headers.get(REPLAY_HEADER),
    )


class DeadLetters:
    """Reads and replays the DLQ of one deployment (topic prefix from ``settings``)."""

    def __init__(self, *, settings: Settings, kafka: KafkaSettings) -> None:
        """Read ``settings.topic("dlq")`` through ``kafka``."""
        self.settings = settings
        self.kafka = kafka
        self._producer: KafkaProducer | None = None

    @property
    def topic(self) -> str:
        """The DLQ topic."""
        return self.settings.topic("dlq")

    def read(self, *, since: float | None = None, reason: str | None = None) -> list[DeadLetter]:
        """The records dead-lettered since ``since`` whose error has ``reason``, oldest first."""
        try:
            return self._read(since, reason)
        except KafkaError as exc:
            raise KafkaUnavailableError(
                f"cannot read {self.topic} from Kafka at {self.kafka.bootstrap_servers}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _read(self, since: float | None, reason: str | None) -> list[DeadLetter]:
        consumer = KafkaConsumer(
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=64 << 20,
            **self.kafka.client_config(),
        )
        try:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                return []
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            ends = consumer.end_offsets(tps)
            starts = consumer.beginning_offsets(tps)
            if since is not None:
                found = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
                for tp in tps:
                    at = found.get(tp)
                    starts[tp] = ends[tp] if at is None else at.offset
            for tp in tps:
                consumer.seek(tp, starts[tp])
            letters: list[DeadLetter] = []
            todo = {tp for tp in tps if starts[tp] < ends[tp]}
            deadline = time.monotonic() + READ_TIMEOUT_S
            while todo and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for rec in records:
                        if rec.offset < ends[tp]:
                            letters.append(_letter(rec))
                    if consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
            if todo:
                raise KafkaUnavailableError(
                    f"reading {self.topic} did not reach its end within {READ_TIMEOUT_S:g}s"
                )
        finally:
            consumer.close()
        if reason:
            letters = [d for d in letters if reason.lower() in d.reason.lower()]
        return sorted(letters, key=lambda d: (d.timestamp, d.partition, d.offset))

    def find(self, ref: str, letters: Sequence[DeadLetter] | None = None) -> DeadLetter:
        """The record ``partition:offset`` (or ``offset``, when one partition has it)."""
        pool = self.read() if letters is None else letters
        part_text, _, off_text = ref.rpartition(":")
        offset, partition = _int(off_text), _int(part_text) if part_text else None
        if offset is None or (part_text and partition is None):
            raise DeadLetterError(f"{ref!r} is not an offset (N, or PARTITION:N)")
        hits = [
            d
            for d in pool
            if d.offset == offset and (partition is None or d.partition == partition)
        ]
        if not hits:
            raise DeadLetterError(f"no record at {ref} in {self.topic}")
        if len(hits) > 1:
            refs = ", ".join(d.ref for d in hits)
            raise DeadLetterError(f"offset {offset} is in several partitions ({refs}): name one")
        return hits[0]

    def replay(self, letters: Sequence[DeadLetter], *, dry_run: bool = False) -> list[DeadLetter]:
        """Produce each record's original again to its source topic; the ones replayed.

        Two DLQ copies of one original (it failed again after a replay) are replayed once.
        """
        latest: dict[str, DeadLetter] = {}
        for d in letters:
            if not d.source_topic:
                raise DeadLetterError(f"record {d.ref} has no source topic header: not replayable")
            latest[d.origin] = d
        chosen = list(latest.values())
        if dry_run or not chosen:
            return chosen
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    acks="all", linger_ms=0, max_request_size=64 << 20, **self.kafka.client_config()
                )
            futures = [
                self._producer.send(
                    d.source_topic,
                    key=d.key,
                    value=d.value,
                    headers=[(REPLAY_HEADER, d.origin.encode())],
                )
                for d in chosen
            ]
            for f in futures:
                f.get(timeout=30)
        except KafkaError as exc:
            raise KafkaUnavailableError(
                f"cannot replay to Kafka at {self.kafka.bootstrap_servers}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return chosen

    def close(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
