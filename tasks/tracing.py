"""Trace context across Kafka, Celery and nodes: OpenTelemetry when it is installed, else nothing.

``pip install flowbridge[otel]`` brings ``opentelemetry-api`` alone; the
application configures an SDK and exporter as it likes (in a ``FLOWBRIDGE_APP``
module, or with ``opentelemetry-instrument``). Without the API every function
here does nothing; with the API but no SDK, OpenTelemetry's no-op tracer does.

The context travels as W3C ``traceparent``/``tracestate``: in the headers of a
Kafka record the bridge consumes (its span per record is their child), in the
headers of each Celery task message (``tasks.worker.port``), into the span of
each node attempt (``tasks.worker.app``), and in the headers of every record
the attempt's commit sends (``ctx.emit``, ``run.*``: outbox rows keep them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["TRACE_HEADERS", "current_headers", "span"]

#: The W3C trace context headers.
TRACE_HEADERS = ("traceparent", "tracestate")

try:  # an optional dependency: tracing is off without it
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace

    _ENABLED = True
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    _ENABLED = False


def current_headers() -> tuple[tuple[str, str], ...]:
    """The current trace context as headers (empty when there is none or no OpenTelemetry)."""
    if not _ENABLED:
        return ()
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return tuple((k, v) for k, v in carrier.items() if k in TRACE_HEADERS)


@contextlib.contextmanager
def span(
    name: str, *, parent: Mapping[str, str] | None = None, attributes: Mapping[str, Any] = {}
) -> Iterator[Any]:
    """A span named ``name``, child of ``parent`` headers when given, else of the current one.

    Yields the span (None without OpenTelemetry); an exception marks it as an error.
    """
    if not _ENABLED:
        yield None
        return
    token = None
    if parent:
        token = _context.attach(_propagate.extract(dict(parent)))
    try:
        tracer = _trace.get_tracer("flowbridge")
        with tracer.start_as_current_span(name, attributes=dict(attributes)) as current:
            yield current
    finally:
        if token is not None:
            _context.detach(token)
