"""The bridge: a Kafka consumer that hands job messages and events to Celery and the store.

Delivery, stated exactly:

* An offset is committed only after every record before it was either
  published to Celery (the Redis broker accepted the task message) or written
  to the DLQ (``acks=all``, the send confirmed). A crash therefore re-delivers
  at most the records since the last commit, and they are handled again.
* Handling a record twice is harmless: a ``start`` is idempotent on its run id
  (a start without one gets ``uuid5(topic:partition:offset)``, the same on every
  delivery); a ``node`` job is checked against the state store by the task,
  which never applies a completion twice; a ``cancel`` is a conditional write.
* A record the bridge cannot accept (not JSON, wrong shape, unknown blueprint,
  run or node, over the size limit) goes to ``<prefix>flowbridge.dlq`` unchanged,
  with a ``flowbridge-error`` header saying why, and the consumer goes on. If the
  DLQ write fails, that partition pauses at the record and its offset stays.
* An event (``<prefix>flowbridge.events``) is deduplicated by its id in the
  store, wakes the node waiting for it or stays in the run's inbox until one
  does; an event for an unknown or finished run goes to the DLQ with the reason.
* If Redis or the state store is down, the affected partition is paused at the
  record that failed and retried; the consumer keeps polling (so it keeps its
  group membership) until they are back.
* A rebalance (a bridge joins or leaves the group) runs inside ``poll``; the
  listener commits what was handed off and not yet committed of the partitions
  it loses and forgets their paused state, so a partition paused for
  backpressure moves to its new owner at the record that failed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from kombu.exceptions import BatchPublishError
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from bridge.errors import MessageError
from bridge.headers import dead_letter_headers, origin_of, trace_of
from bridge.kafka_workflow import apply_kw, is_kw, parse_kw
from bridge.messages import (
    CancelJob,
    NodeJob,
    OperateJob,
    ResumeJob,
    StartJob,
    parse_event,
    parse_job,
)
from bridge.metrics import BridgeMetrics
from bridge.reload import BlueprintWatcher
from bridge.settings import BridgeSettings, KafkaSettings
from bridge.topics import ensure_topics
from state.constants import RUN_FAILED
from state.errors import StateError
from state.records import Run
from tasks.engine import resume_node, start_run
from tasks.errors import ResumeError, RetryError, UnknownBlueprintError
from tasks.events import lifecycle_events
from tasks.lifecycle import cancel, deliver_event, pause, retry, start, unpause
from tasks.runtime import Runtime
from tasks.tracing import span

__all__ = ["Bridge"]

log = logging.getLogger("flowbridge.bridge")

#: How long a paused partition waits before the failed record is tried again.
RETRY_PAUSE_S = 1.0
#: How often the consumer lag gauges are updated.
LAG_EVERY_S = 2.0
#: How long start-up waits for the topics' partitions to show in the client's metadata.
TOPIC_METADATA_WAIT_S = 30.0


class _Backpressure(Exception):
    """A downstream (Redis, the state store, the DLQ) is unavailable: pause and retry."""


@dataclass
class BridgeStats:
    """Counters the bridge keeps (logged at shutdown; exported as metrics later)."""

    dispatched: int = 0
    dead_lettered: int = 0
    paused: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands a rebalance's revoked and assigned partitions to the bridge."""

    def __init__(self, bridge: Bridge, consumer: KafkaConsumer) -> None:
        """Listen for ``bridge``'s ``consumer``."""
        self.bridge = bridge
        self.consumer = consumer

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is done and forget the revoked partitions' state."""
        self.bridge._revoked(self.consumer, set(revoked), lost=False)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Evicted from the group: a commit would be refused, so only forget."""
        self.bridge._revoked(self.consumer, set(lost), lost=True)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start the new partitions clean."""
        self.bridge._assigned(self.consumer, set(assigned))


class Bridge:
    """Consumes ``<prefix>flowbridge.jobs`` and dispatches Celery tasks (see the module doc)."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        kafka: KafkaSettings,
        settings: BridgeSettings,
        watcher: BlueprintWatcher | None = None,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        """Prepare the bridge; nothing connects until ``run``."""
        self.metrics = metrics
        self._lag_due = 0.0
        self.rt = runtime
        self.watcher = watcher
        self.kafka = kafka
        self.settings = settings
        self.stats = BridgeStats()
        self._stop = threading.Event()
        self._paused: dict[TopicPartition, float] = {}
        # Next offsets handed off but not yet committed (a commit failed): committed on revoke.
        self._uncommitted: dict[TopicPartition, int] = {}
        # The listener runs on kafka-python's IO thread, the loop on this one.
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        self._dlq: KafkaProducer | None = None

    @property
    def jobs_topic(self) -> str:
        """The topic the bridge consumes."""
        return self.rt.settings.topic("jobs")

    @property
    def events_topic(self) -> str:
        """The topic of events for runs (signals, approvals, callbacks)."""
        return self.rt.settings.topic("events")

    @property
    def kw_topic(self) -> str:
        """kafka-workflow's resume topic (an alias of the events topic for its messages)."""
        return self.rt.settings.topic_prefix + self.rt.settings.kw_resume_topic

    @property
    def group_id(self) -> str:
        """The consumer group, with the topic prefix applied."""
        return self.rt.settings.topic_prefix + self.settings.group_id

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and leave the group."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """Drain and commit on SIGTERM (a PaaS's stop) and SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    # --- Kafka clients ------------------------------------------------
    def _make_consumer(self) -> KafkaConsumer:
        s = self.settings
        consumer = KafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_records=s.max_poll_records,
            # Oversized records must still be fetched, so they can be dead-lettered.
            max_partition_fetch_bytes=s.dlq_max_bytes,
            fetch_max_bytes=max(s.dlq_max_bytes, 50 * 1024 * 1024),
            **self.kafka.client_config(),
        )
        consumer.subscribe(
            [self.jobs_topic, self.events_topic, self.kw_topic], listener=_Rebalance(self, consumer)
        )
        return consumer

    def _make_dlq_producer(self) -> KafkaProducer:
        return KafkaProducer(
            acks="all",
            max_request_size=self.settings.dlq_max_bytes,
            linger_ms=0,
            **self.kafka.client_config(),
        )

    # --- the loop -----------------------------------------------------
    def run(self) -> int:
        """Consume until stopped; returns a process exit code."""
        ensure_topics(self.kafka, self.rt.settings, self.settings)
        self._dlq = self._make_dlq_producer()
        self._consumer = consumer = self._make_consumer()
        self._await_partitions(consumer)
        log.info("bridge consuming %s as group %s", self.jobs_topic, self.group_id)
        try:
            while not self._stop.is_set():
                if self.watcher is not None:
                    # In this thread, the one that reads the registry: no lock needed.
                    self.watcher.poll()
                self._resume_due()
                batch = consumer.poll(timeout_ms=200)
                self._measure_lag(consumer)
                for tp, records in batch.items():
                    if self._stop.is_set():
                        break
                    self._handle_partition(consumer, tp, records)
        finally:
            log.info(
                "bridge stopping: %d dispatched, %d dead-lettered",
                self.stats.dispatched,
                self.stats.dead_lettered,
            )
            consumer.close(autocommit=False)
            self._dlq.close(timeout=5)
        return 0

    def _await_partitions(self, consumer: KafkaConsumer) -> None:
        """Know the partitions of both topics before the first poll joins the group.

        kafka-python's group leader assigns from its metadata cache: a join before
        the cache holds the topics (just created, or a fresh client) assigns
        nothing ("No partition metadata"), and the bridge sits idle until the next
        metadata refresh, minutes later. Seen on Apache Kafka, not on tansu.
        """
        deadline = time.monotonic() + TOPIC_METADATA_WAIT_S
        for topic in (self.jobs_topic, self.events_topic, self.kw_topic):
            while not consumer.partitions_for_topic(topic) and not self._stop.is_set():
                if time.monotonic() > deadline:
                    log.warning("no partitions known for %s yet; consuming anyway", topic)
                    break
                time.sleep(0.1)

    def _handle_partition(
        self, consumer: KafkaConsumer, tp: TopicPartition, records: list[Any]
    ) -> None:
        """Handle one partition's polled records; commit once their task messages are sent.

        The records' ``send_task`` publishes go out together, in one Redis pipeline
        (``TaskPort.publish_batch``), when the loop ends. If that send fails, none
        of them counts as handed off: the partition pauses at its first record and
        nothing is committed; they are handled again (harmless) in order. A chord
        published in the block joins its batch.
        """
        next_offset: int | None = None
        try:
            with self.rt.port.publish_batch():
                for rec in records:
                    if tp in self._paused:
                        break
                    try:
                        with span(
                            f"flowbridge.bridge {tp.topic}",
                            parent=trace_of(rec),
                            attributes={
                                "messaging.kafka.offset": rec.offset,
                                "messaging.source": tp.topic,
                            },
                        ):
                            self.handle(rec)
                    except _Backpressure as exc:
                        self._pause(consumer, tp, rec.offset, exc)
                        break
                    next_offset = rec.offset + 1
        except (BatchPublishError, RedisError, KombuOperationalError, OSError) as exc:
            # Some of the batch may have reached Redis ("delivery is uncertain"): sending
            # those again is harmless, losing the others is not.
            if records:
                with self._lock:
                    self._paused.pop(tp, None)
                self._pause(consumer, tp, records[0].offset, f"batch not sent: {exc}")
            return
        if next_offset is not None:
            with self._lock:
                self._uncommitted[tp] = next_offset
            self._commit(consumer, [tp])

    def _pause(self, consumer: KafkaConsumer, tp: TopicPartition, offset: int, why: object) -> None:
        """Pause ``tp`` and fetch it again from ``offset`` after ``RETRY_PAUSE_S``."""
        log.warning("pausing %s at offset %d: %s", tp, offset, why)
        self.stats.paused += 1
        consumer.pause(tp)
        consumer.seek(tp, offset)
        with self._lock:
            self._paused[tp] = time.monotonic() + RETRY_PAUSE_S

    def _commit(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> None:
        """Commit the handed-off offsets of ``tps``; a failed commit is kept and tried again."""
        with self._lock:
            offsets = {
                tp: OffsetAndMetadata(self._uncommitted[tp], "", -1)
                for tp in tps
                if tp in self._uncommitted
            }
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            # Kicked from the group or mid-rebalance: the new owner handles these records
            # again (harmless), and the revoke listener commits them if this member still can.
            log.warning("commit of %s failed (kept for later): %s", sorted(offsets), exc)
            return
        with self._lock:
            for tp, meta in offsets.items():
                if self._uncommitted.get(tp) == meta.offset:
                    del self._uncommitted[tp]

    def _resume_due(self) -> None:
        if self._consumer is None:
            return
        now = time.monotonic()
        assigned = self._consumer.assignment()
        with self._lock:
            # A partition a rebalance took away is no longer ours to resume (it would raise).
            due = [tp for tp, at in self._paused.items() if at <= now and tp in assigned]
            for tp in due:
                del self._paused[tp]
            retry = [tp for tp in self._uncommitted if tp in assigned]
        if due:
            self._consumer.resume(*due)
        if retry:
            self._commit(self._consumer, retry)

    def _revoked(self, consumer: KafkaConsumer, tps: set[TopicPartition], *, lost: bool) -> None:
        """A rebalance takes ``tps``: commit what was handed off, forget their paused state.

        Runs on kafka-python's IO thread, where a blocking commit is refused: the commit is
        sent asynchronously and reaches the coordinator before this member's next join.
        """
        with self._lock:
            offsets = {
                tp: OffsetAndMetadata(self._uncommitted.pop(tp), "", -1)
                for tp in tps
                if tp in self._uncommitted
            }
            for tp in tps:
                self._paused.pop(tp, None)
        if offsets and not lost:
            consumer.commit_async(offsets)
        log.info(
            "partitions %s: %s (%d uncommitted offsets %s)",
            "lost" if lost else "revoked",
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps)) or "none",
            len(offsets),
            "dropped" if lost else "committed",
        )

    def _assigned(self, consumer: KafkaConsumer, tps: set[TopicPartition]) -> None:
        """New partitions start fetching from their committed offsets, never paused."""
        with self._lock:
            for tp in tps:
                self._paused.pop(tp, None)
        # A fresh assignment is not paused; resume in case one was kept across the rebalance.
        consumer.resume(*[tp for tp in tps if tp in consumer.assignment()])
        log.info(
            "partitions assigned: %s",
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps)) or "none",
        )

    # --- one record ---------------------------------------------------
    def handle(self, rec: Any) -> None:
        """Dispatch one record, or dead-letter it; raise ``_Backpressure`` to retry it later."""
        try:
            if rec.topic in (self.events_topic, self.kw_topic):
                if rec.topic == self.kw_topic or is_kw(rec.value):
                    self._kafka_workflow(rec)
                else:
                    self._event(rec)
                self._handled(rec, "dispatched")
                return
            job = parse_job(rec.value, max_bytes=self.settings.max_message_bytes)
            if isinstance(job, StartJob):
                self._start(job, rec)
            elif isinstance(job, NodeJob):
                self._node(job)
            elif isinstance(job, CancelJob):
                cancel(self.rt, job.run_id, job.reason or "cancelled by request")
            elif isinstance(job, OperateJob):
                self._operate(job)
            self._handled(rec, "dispatched")
        except MessageError as exc:
            self._dead_letter(rec, exc.reason)
            if exc.is_start and exc.run_id:
                self._fail_start(exc)
        except (RedisError, KombuOperationalError, StateError, OSError) as exc:
            raise _Backpressure(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            # A bug must not stop the consumer or lose the message: it goes to the DLQ.
            log.exception(
                "unexpected error handling %s:%d:%d", rec.topic, rec.partition, rec.offset
            )
            self._dead_letter(rec, f"internal error: {type(exc).__name__}: {exc}")

    def _start(self, job: StartJob, rec: Any) -> None:
        # The same record always names the same run, so a redelivery cannot start a second one.
        run_id = job.run_id or str(uuid.uuid5(uuid.NAMESPACE_URL, origin_of(rec)))
        try:
            start(self.rt, job.blueprint, job.input, run_id=run_id, version=job.version)
        except UnknownBlueprintError as exc:
            raise MessageError(
                str(exc), run_id=job.run_id, is_start=True, blueprint=job.blueprint, input=job.input
            ) from None

    def _node(self, job: NodeJob) -> None:
        loaded = self.rt.load_run(job.run_id)
        if loaded is None and job.flowcraft and job.blueprint is not None:
            self._flowcraft_start(job)
            return
        if loaded is None:
            raise MessageError(f"unknown run {job.run_id!r} (node job for {job.node!r})")
        run, bp = loaded
        if job.blueprint is not None and job.blueprint != run.blueprint_id:
            raise MessageError(
                f"run {run.run_id!r} is of blueprint {run.blueprint_id!r}, not {job.blueprint!r}"
            )
        if bp is not None and job.node not in bp.node_ids:
            raise MessageError(
                f"unknown node {job.node!r} in run {run.run_id!r} "
                f"(blueprint {bp.id!r} has: {', '.join(bp.node_ids)})"
            )
        if bp is None or run.terminal:
            # Valid but too late: recorded, not dispatched (the task would ignore it anyway).
            self.rt.store.append_history(
                run.run_id,
                "node.ignored",
                node_id=job.node,
                data={"reason": f"run is {run.status}"},
            )
            return
        self.rt.dispatch(
            bp,
            run.run_id,
            job.node,
            iteration=job.iteration,
            attempt=job.attempt or 1,
            run_attempt=run.attempt,
        )

    def _operate(self, job: OperateJob) -> None:
        """Retry, pause or resume a run; one that cannot be is recorded in its history."""
        done = False
        try:
            if job.action == "retry":
                attempt = retry(self.rt, job.run_id, job.from_nodes or None)
                log.info("run %s: retried as attempt %d", job.run_id, attempt)
                return
            if job.action == "pause":
                done = pause(self.rt, job.run_id)
            else:
                done = unpause(self.rt, job.run_id)
        except RetryError as exc:
            # Checked by the CLI and the HTTP API before they publish: a late or repeated
            # request (another operator was first), not bad input for the DLQ.
            log.warning("run %s: retry not applied: %s", job.run_id, exc)
            return
        log.info("run %s: %s %s", job.run_id, job.action, "applied" if done else "not applied")

    def _kafka_workflow(self, rec: Any) -> None:
        msg = parse_kw(
            rec.value or b"",
            key=rec.key,
            headers=rec.headers,
            default_workflow=self.rt.settings.kw_workflow,
            max_bytes=self.settings.max_message_bytes,
        )
        apply_kw(self.rt, msg, where=origin_of(rec))

    def _flowcraft_start(self, job: NodeJob) -> None:
        """Flowcraft's client starts a run with one job per start node of a fresh run id.

        The first of them creates the run (idempotent on the run id; its input is
        empty: flowcraft's client writes the initial context to its own store) and
        dispatches every start node; the others find it and join it.
        """
        assert job.blueprint is not None
        try:
            bp = self.rt.blueprints.get(job.blueprint)
        except UnknownBlueprintError as exc:
            raise MessageError(f"{exc} (flowcraft job for run {job.run_id!r})") from None
        if job.node not in bp.analysis.start_nodes:
            raise MessageError(
                f"unknown run {job.run_id!r}: a flowcraft job creates a run only for a start "
                f"node of {bp.id!r} ({', '.join(bp.analysis.start_nodes)}), not {job.node!r}"
            )
        start_run(self.rt, bp, {}, run_id=job.run_id)

    def _event(self, rec: Any) -> None:
        ev = parse_event(rec.value, max_bytes=self.settings.max_message_bytes)
        # Without an id, the record's position names the event: a redelivery is a duplicate.
        event_id = ev.event_id or str(uuid.uuid5(uuid.NAMESPACE_URL, origin_of(rec)))
        if isinstance(ev, ResumeJob):
            try:
                delivery = resume_node(
                    self.rt,
                    ev.run_id,
                    ev.node,
                    output=ev.output,
                    action=ev.action,
                    event_id=event_id,
                )
            except ResumeError as exc:
                raise MessageError(str(exc)) from None
            if delivery.outcome == "no-run":
                raise MessageError(f"unknown run {ev.run_id!r} (resume of {ev.node!r})")
            if delivery.outcome == "finished":
                raise MessageError(f"run {ev.run_id!r} has finished: {ev.node!r} not resumed")
            return
        delivery = deliver_event(self.rt, ev.run_id, ev.name, event_id=event_id, payload=ev.payload)
        if delivery.outcome == "no-run":
            raise MessageError(f"unknown run {ev.run_id!r} (event {ev.name!r})")
        if delivery.outcome == "finished":
            raise MessageError(f"run {ev.run_id!r} has finished: event {ev.name!r} not delivered")
        if delivery.outcome == "stored":
            log.info("run %s: event %s kept until a node waits for it", ev.run_id, ev.name)

    def _fail_start(self, rejected: MessageError) -> None:
        """Record a rejected start that named its run as failed, so a waiting client is answered.

        The record keeps the blueprint name and input the start asked for (there is no
        snapshot: the run never started).
        """
        assert rejected.run_id is not None
        run_id = rejected.run_id
        run = Run(
            run_id=run_id,
            blueprint_id=rejected.blueprint,
            version="",
            status=RUN_FAILED,
            input=rejected.input,
            snapshot={},
            error=f"rejected: {rejected.reason}",
        )
        events = lifecycle_events(self.rt.settings, run_id, "failed", error=run.error)
        try:
            created, _ = self.rt.store.create_run(run, start_nodes=(), outbox=events)
        except Exception as exc:
            # The record is in the DLQ already; failing to mark the run must not stop the bridge.
            log.warning("could not record rejected run %s as failed: %s", run_id, exc)
            return
        if created:
            self.rt.notify_outbox()

    def _dead_letter(self, rec: Any, reason: str) -> None:
        assert self._dlq is not None
        headers = dead_letter_headers(rec, reason)
        log.warning("dead-lettering %s:%d:%d: %s", rec.topic, rec.partition, rec.offset, reason)
        try:
            self._dlq.send(
                self.rt.settings.topic("dlq"), key=rec.key, value=rec.value, headers=headers
            ).get(timeout=30)
        except Exception as exc:
            raise _Backpressure(f"DLQ write failed: {exc}") from exc
        self.stats.dead_lettered += 1
        self._handled(rec, "dead_lettered")
        if self.metrics is not None:
            self.metrics.dead_lettered(reason)

    def _handled(self, rec: Any, outcome: str) -> None:
        if outcome == "dispatched":
            self.stats.dispatched += 1
        if self.metrics is not None:
            self.metrics.handled(rec.topic, outcome)

    def _measure_lag(self, consumer: KafkaConsumer) -> None:
        """Consumer lag per assigned partition, from the fetches' high-water marks."""
        now = time.monotonic()
        if self.metrics is None or now < self._lag_due:
            return
        self._lag_due = now + LAG_EVERY_S
        assigned = list(consumer.assignment())
        highs = {tp: consumer.highwater(tp) for tp in assigned}
        unknown = [tp for tp, high in highs.items() if high is None]
        if unknown:
            # No fetch has said yet (an idle partition): ask the broker.
            highs.update(consumer.end_offsets(unknown))
        lags = {
            tp: max(int(h) - consumer.position(tp), 0) for tp, h in highs.items() if h is not None
        }
        self.metrics.consumer_lag(lags)
