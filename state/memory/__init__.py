"""The in-memory state store (``memory://NAME``): real code, for tests and ``flowbridge.testing``.

- ``database``: the named databases of this process (``database``, ``drop``);
- ``txn``: the transaction primitives the shared operations write through;
- ``store``: ``MemoryStore``, the reads and retention.
"""

from __future__ import annotations

from state.memory.database import drop
from state.memory.store import MemoryStore

__all__ = ["MemoryStore", "drop"]
