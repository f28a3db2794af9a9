"""How keys map to shards and times to buckets: the same numbers in every process and backend."""

from __future__ import annotations

import zlib

from state.constants import STATUS_BUCKET_S

__all__ = ["bucket_of", "shard_of"]


def shard_of(key: str, shards: int) -> int:
    """A stable shard number for ``key``: ``crc32(key) % shards`` (Celery queues, CQL shards)."""
    return zlib.crc32(key.encode()) % shards


def bucket_of(ts: float) -> int:
    """The status-index bucket of a time (``STATUS_BUCKET_S`` wide)."""
    return int(ts // STATUS_BUCKET_S)
