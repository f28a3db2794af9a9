"""How keys map to shards and times to buckets: the same numbers in every process and backend."""

from __future__ import annotations

import zlib

from state.constants import STATUS_BUCKET_S

__all__ = ["OUTBOX_SHARDS", "bucket_of", "outbox_shard", "shard_of"]

#: Shards of the outbox, in every backend: each is relayed by one bridge at a time (a lease).
OUTBOX_SHARDS = 8


def shard_of(key: str, shards: int) -> int:
    """A stable shard number for ``key``: ``crc32(key) % shards`` (Celery queues, CQL shards)."""
    return zlib.crc32(key.encode()) % shards


def outbox_shard(outbox_id: str) -> int:
    """The outbox shard of a row: ``crc32(id) % OUTBOX_SHARDS`` (Scylla's partition too)."""
    return shard_of(outbox_id, OUTBOX_SHARDS)


def bucket_of(ts: float) -> int:
    """The status-index bucket of a time (``STATUS_BUCKET_S`` wide)."""
    return int(ts // STATUS_BUCKET_S)
