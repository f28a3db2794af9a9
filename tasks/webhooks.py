"""What a ``webhook`` node's URL is: its path, its event and its signature.

Both sides use this module: the engine, where the ``webhook`` built-in makes the
URL, and the web process, which takes the call and turns it into the event. With
``FLOWBRIDGE_WEBHOOK_SECRET`` set the URL carries ``?sig=`` (a hex HMAC-SHA256 of
``<run id>/<node id>`` with the secret), which is the caller's only credential.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "SIGNATURE_PARAM",
    "valid_signature",
    "webhook_event",
    "webhook_signature",
    "webhook_url",
]

#: The query parameter that carries the signature.
SIGNATURE_PARAM = "sig"


def webhook_event(node_id: str) -> str:
    """The event a call to ``node_id``'s URL becomes (flowcraft: ``webhook:<node id>``)."""
    return f"webhook:{node_id}"


def webhook_signature(secret: str, run_id: str, node_id: str) -> str:
    """The hex HMAC-SHA256 of ``<run_id>/<node_id>`` with ``secret``."""
    return hmac.new(secret.encode(), f"{run_id}/{node_id}".encode(), hashlib.sha256).hexdigest()


def valid_signature(secret: str, run_id: str, node_id: str, given: str | None) -> bool:
    """Whether ``given`` is the signature of this run's node (compared in constant time)."""
    if not given:
        return False
    expected = webhook_signature(secret, run_id, node_id)
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def webhook_url(base_url: str, run_id: str, node_id: str, secret: str | None = None) -> str:
    """``<base>/webhooks/<run id>/<node id>``, with ``?sig=`` when there is a secret."""
    url = f"{base_url.rstrip('/')}/webhooks/{run_id}/{node_id}"
    if secret:
        url += f"?{SIGNATURE_PARAM}={webhook_signature(secret, run_id, node_id)}"
    return url
