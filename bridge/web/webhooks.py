"""``POST /webhooks/{run_id}/{node_id}``: an outside system's call becomes a webhook's event.

A ``webhook`` node's output names this URL; the ``wait`` after it waits for the
event ``webhook:<node id>``. The call is checked (its signature, or the web
process's credentials when no ``FLOWBRIDGE_WEBHOOK_SECRET`` is set; the run, the
node, the run's status, the size) and published through ``Commands.signal`` like
any event, so the bridge delivers it and the store dedupes it by its event id.
An ``Idempotency-Key`` fixes that id: a caller's retry is delivered once.

The payload is small on purpose: ``{"body", "query", "headers"}`` (only the
content type of the headers; never ``sig``, which is a credential). Nothing here
logs the secret, a signature or a query string.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from bridge.api import Queries
from bridge.api.commands import Commands, event_message
from bridge.web.auth import COOKIE, Auth
from state.constants import RUN_TERMINAL
from state.records import Run
from tasks.webhooks import SIGNATURE_PARAM, valid_signature, webhook_event

__all__ = [
    "MAX_KEY_CHARS",
    "WebhookSettings",
    "add_webhooks",
    "check_call",
    "event_id_of",
    "payload_of",
    "webhook_nodes",
]

#: The longest ``Idempotency-Key`` taken (it is hashed into the event id, so any text works).
MAX_KEY_CHARS = 255

_MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """How webhook calls are checked (read by ``serve`` from the workers' and bridge's settings)."""

    #: FLOWBRIDGE_WEBHOOK_SECRET: a valid ``?sig=`` is the credential; None: the web's own.
    secret: str | None = field(default=None, repr=False)
    #: FLOWBRIDGE_MAX_MESSAGE_BYTES: the bridge dead-letters larger events, so they are refused.
    max_message_bytes: int = _MIB


def payload_of(body: bytes, content_type: str | None, query: Mapping[str, str]) -> dict[str, Any]:
    """The event's payload: the body (JSON, else ``{"text"}``), the query, the content type.

    The body is JSON when it parses as JSON and the content type is JSON or absent;
    an empty body is None. ``sig`` is left out of the query.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    decoded: Any = None
    if body:
        text = body.decode("utf-8", errors="replace")
        decoded = {"text": text}
        if not media or media == "application/json" or media.endswith("+json"):
            with contextlib.suppress(ValueError):  # not JSON after all: it stays text
                decoded = json.loads(text)
    return {
        "body": decoded,
        "query": {k: v for k, v in query.items() if k != SIGNATURE_PARAM},
        "headers": {"content-type": content_type} if content_type else {},
    }


def event_id_of(node_id: str, idempotency_key: str | None) -> str | None:
    """The event id an ``Idempotency-Key`` gives (per node: one key may serve two webhooks)."""
    if not idempotency_key:
        return None
    if len(idempotency_key) > MAX_KEY_CHARS:
        raise HTTPException(400, f"Idempotency-Key is over {MAX_KEY_CHARS} characters")
    # Hashed: any key the caller chose becomes an id the bridge's message format accepts.
    digest = hashlib.sha256(f"{node_id}\n{idempotency_key}".encode()).hexdigest()[:32]
    return f"webhook:{digest}"


def webhook_nodes(run: Run) -> list[str]:
    """The ids of the ``webhook`` nodes in the run's blueprint snapshot."""
    nodes = (run.snapshot or {}).get("nodes") or []
    return [str(n["id"]) for n in nodes if isinstance(n, dict) and n.get("uses") == "webhook"]


def check_call(queries: Queries, run_id: str, node_id: str, event_id: str | None) -> bool:
    """Refuse a call the run cannot take (404, 400, 409); True if it already took this event.

    A retry of a call whose event the run received (same ``Idempotency-Key``) is
    answered as the first was, even once the run finished.
    """
    run = queries.record(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    hooks = webhook_nodes(run)
    if node_id not in hooks:
        has = f"its webhook nodes: {', '.join(hooks)}" if hooks else "it has no webhook node"
        raise HTTPException(
            400, f"node {node_id!r} is not a webhook node of run {run_id!r} ({has})"
        )
    if run.status in RUN_TERMINAL:
        if event_id is not None and queries.received_event(run_id, event_id):
            return True
        raise HTTPException(409, f"run {run_id!r} is {run.status}")
    return False


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_big = HTTPException(
        413, f"the call is over FLOWBRIDGE_MAX_MESSAGE_BYTES={limit} (the bridge's event limit)"
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def add_webhooks(
    app: FastAPI,
    *,
    queries: Queries,
    commands: Commands,
    auth: Auth,
    settings: WebhookSettings,
) -> None:
    """Add ``POST /webhooks/{run_id}/{node_id}`` to ``app``."""
    limit = settings.max_message_bytes

    def accept(run_id: str, node_id: str, key: str | None, payload: dict[str, Any]) -> str:
        keyed = event_id_of(node_id, key)
        if check_call(queries, run_id, node_id, keyed) and keyed is not None:
            return keyed
        event_id = keyed or str(uuid.uuid4())
        name = webhook_event(node_id)
        size = len(json.dumps(event_message(run_id, name, payload, event_id=event_id)).encode())
        if size > limit:
            raise HTTPException(
                413, f"the event is {size} bytes, over FLOWBRIDGE_MAX_MESSAGE_BYTES={limit}"
            )
        # Checked above already; the bridge drops an event that reaches a finished run.
        return commands.signal(run_id, name, payload, event_id=event_id)

    @app.post(
        "/webhooks/{run_id}/{node_id}",
        tags=["webhooks"],
        status_code=202,
        responses={
            400: {"description": "the node is not a webhook node of the run"},
            401: {"description": "no FLOWBRIDGE_WEBHOOK_SECRET, and no credentials"},
            403: {"description": "FLOWBRIDGE_WEBHOOK_SECRET is set and sig is not valid"},
            404: {"description": "no such run"},
            409: {"description": "the run has finished"},
            413: {"description": "over FLOWBRIDGE_MAX_MESSAGE_BYTES"},
        },
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}},
            }
        },
    )
    async def webhook(
        run_id: str,
        node_id: str,
        request: Request,
        sig: str | None = Query(
            None, description="the URL's signature (when FLOWBRIDGE_WEBHOOK_SECRET is set)"
        ),
        idempotency_key: str | None = Header(
            None, description="the same key delivers one event, however often it is sent"
        ),
    ) -> dict[str, Any]:
        """Deliver the event ``webhook:<node_id>`` to the run (its ``wait`` wakes).

        The payload is ``{"body": <JSON, or {"text": ...}>, "query": {...}, "headers":
        {"content-type": ...}}``; the answer names the event and its id. With
        ``FLOWBRIDGE_WEBHOOK_SECRET`` set the URL's ``sig`` is the only credential;
        without it the web process's own (bearer, basic, session) are needed.
        """
        if settings.secret is not None:
            if not valid_signature(settings.secret, run_id, node_id, sig):
                raise HTTPException(403, "a valid signature (?sig=) is required")
        elif not auth.allows(request.headers.get("authorization"), request.cookies.get(COOKIE)):
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        body = await _read_body(request, limit)
        payload = payload_of(body, request.headers.get("content-type"), request.query_params)
        event_id = await run_in_threadpool(accept, run_id, node_id, idempotency_key, payload)
        return {"run_id": run_id, "event": webhook_event(node_id), "event_id": event_id}
