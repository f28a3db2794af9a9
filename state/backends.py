"""The registry of store backends, keyed by the URL scheme of ``FLOWBRIDGE_STATE_URL``.

Each entry names (as ``module:function``) the function that opens a store for
a URL of its scheme; the module is imported only when a URL of that scheme is
opened, so opening a SQLite store never imports the Cassandra driver. A new
backend is one ``register`` call (or one line in ``_BUILTIN``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

from state.errors import ConfigError
from state.protocol import StateStore

__all__ = ["Opener", "open_store", "register", "schemes"]


class Opener(Protocol):
    """Opens (lazily: no connection yet) a store for one URL of its scheme."""

    def __call__(
        self,
        url: str,
        *,
        env: Mapping[str, str],
        retention_s: float | None,
        clock: Callable[[], float] | None,
    ) -> StateStore:
        """A store for ``url`` (``env``: the process environment, for credentials and checks)."""


#: scheme -> ``module:function`` of its ``Opener``.
_BUILTIN: dict[str, str] = {
    "sqlite": "state.sqlite.store:open_url",
    "scylla": "state.scylla.store:open_url",
    "cassandra": "state.scylla.store:open_url",
    "memory": "state.memory.store:open_url",
}
_registry: dict[str, str | Opener] = dict(_BUILTIN)


def register(scheme: str, opener: str | Opener) -> None:
    """Make ``scheme://`` URLs open with ``opener`` (an ``Opener`` or its ``module:function``)."""
    _registry[scheme] = opener


def schemes() -> list[str]:
    """The URL schemes a store can be opened with, sorted."""
    return sorted(_registry)


def _resolve(entry: str | Opener) -> Opener:
    if not isinstance(entry, str):
        return entry
    module, _, name = entry.partition(":")
    opener: Opener = getattr(importlib.import_module(module), name)
    return opener


def open_store(
    url: str,
    *,
    env: Mapping[str, str] | None = None,
    retention_s: float | None = None,
    clock: Callable[[], float] | None = None,
) -> StateStore:
    """Open (lazily: no connection yet) the store that ``url`` names."""
    scheme = urlsplit(url).scheme
    entry = _registry.get(scheme)
    if entry is None:
        known = ", ".join(f"{s}://" for s in schemes())
        # The URL itself is not quoted: it may hold a password.
        raise ConfigError(f"FLOWBRIDGE_STATE_URL: unknown scheme {scheme!r} (known: {known})")
    return _resolve(entry)(url, env=env or {}, retention_s=retention_s, clock=clock)
