"""The Scylla/Cassandra state store: the production backend (``scylla://``, ``cassandra://``).

``ScyllaStore`` (``store``) composes the parts; see its module for what it
guarantees and where each part lives. Nothing here imports the driver until a
store first connects.
"""

from __future__ import annotations

from state.scylla.config import (
    ScyllaConfig,
    format_replication,
    parse_replication,
    parse_scylla_url,
)
from state.scylla.store import ScyllaStore

__all__ = [
    "ScyllaConfig",
    "ScyllaStore",
    "format_replication",
    "parse_replication",
    "parse_scylla_url",
]
