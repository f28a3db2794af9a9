"""Which state store the environment names: ``FLOWBRIDGE_STATE_URL`` (or ``SCYLLA_HOSTS``).

``open_store`` opens it through the backend registry (``state.backends``).
"""

from __future__ import annotations

from collections.abc import Mapping

from state.backends import open_store

__all__ = ["DEFAULT_STATE_URL", "open_store", "state_url_from_env"]

#: A file in the working directory: the embedded default for one host.
DEFAULT_STATE_URL = "sqlite:///flowbridge.db"


def state_url_from_env(env: Mapping[str, str]) -> str:
    """The state URL: ``FLOWBRIDGE_STATE_URL`` wins over ``SCYLLA_HOSTS``/``SCYLLA_KEYSPACE``."""
    url = env.get("FLOWBRIDGE_STATE_URL", "").strip()
    if url:
        return url
    hosts = env.get("SCYLLA_HOSTS", "").strip()
    if hosts:
        keyspace = env.get("SCYLLA_KEYSPACE", "flowbridge").strip() or "flowbridge"
        return f"scylla://{hosts}/{keyspace}"
    return DEFAULT_STATE_URL
