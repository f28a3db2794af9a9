"""Calling a node function and classifying what happened: done, failed (retryable?), missing.

The engine decides what to do with an outcome (retry, fallback, fail the run);
this module only says what the call produced, so the rules for "which errors
are retried" live in one place.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.context import NodeContext, Result
from tasks.errors import NodeError, UnknownNodeError

__all__ = ["Done", "Failed", "Missing", "Outcome", "call_node"]

log = logging.getLogger("flowbridge.engine")


@dataclass(frozen=True)
class Done:
    """The node returned: its output and the action that chooses its edges."""

    output: Any
    action: str | None = None


@dataclass(frozen=True)
class Failed:
    """The attempt failed; ``retryable`` and ``delay_s`` steer what happens next."""

    error: str
    retryable: bool = True
    delay_s: float | None = None


@dataclass(frozen=True)
class Missing:
    """This process has no implementation for the node's ``uses`` (another worker may)."""

    error: UnknownNodeError


Outcome = Done | Failed | Missing


def _run(fn: Callable[..., Any], ctx: NodeContext) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(ctx))
    result = fn(ctx)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(aw: Any) -> Any:
    return await aw


def _check_json(what: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise NodeError(f"{what} is not JSON-serializable: {exc}", retryable=False) from exc


def call_node(
    resolve: Callable[[], Callable[..., Any]],
    ctx: NodeContext,
    *,
    timeout_s: float | None,
    timeout_errors: tuple[type[BaseException], ...],
) -> Outcome:
    """Call the node function ``resolve()`` gives with ``ctx``; never raises for node errors."""
    node_id = ctx.node_id
    try:
        result = _run(resolve(), ctx)
        output, action = (
            (result.output, result.action) if isinstance(result, Result) else (result, None)
        )
        if action is not None and not isinstance(action, str):
            raise NodeError(
                f"action must be a string, not {type(action).__name__}", retryable=False
            )
        _check_json(f"node {node_id!r} output", output)
        _check_json(f"node {node_id!r} context writes", ctx.context.staged)
        _check_json(f"node {node_id!r} emitted values", [m.value for m in ctx.emitted])
    except timeout_errors:
        return Failed(f"node {node_id!r} timed out after {timeout_s or 0:g}s")
    except NodeError as exc:
        return Failed(str(exc), exc.retryable, exc.delay_s)
    except UnknownNodeError as exc:
        return Missing(exc)
    except Exception as exc:
        log.info(
            "run %s node %s attempt %d raised", ctx.run_id, node_id, ctx.attempt, exc_info=True
        )
        return Failed(f"{type(exc).__name__}: {exc}")
    return Done(output, action)
