"""An application module that configures the OpenTelemetry SDK, as a user's would.

Loaded with FLOWBRIDGE_APP next to ``tests.apps.e2e_nodes``: every span the
process ends is written as one JSON line to ``E2E_TRACE_FILE`` (a synchronous
processor, so prefork children export without a background thread).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from flowbridge import NodeContext, node, register_blueprint


class FileExporter(SpanExporter):
    """Appends each span as a JSON line."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(os.environ["E2E_TRACE_FILE"], "a") as out:
            for s in spans:
                ctx = s.get_span_context()
                out.write(
                    json.dumps(
                        {
                            "name": s.name,
                            "trace_id": f"{ctx.trace_id:032x}",
                            "span_id": f"{ctx.span_id:016x}",
                            "parent_id": None if s.parent is None else f"{s.parent.span_id:016x}",
                            "attributes": dict(s.attributes or {}),
                            "pid": os.getpid(),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
trace.set_tracer_provider(provider)


@node("emit-traced")
def emit_traced(ctx: NodeContext) -> dict[str, bool]:
    ctx.emit("traced.events", {"run_id": ctx.run_id})
    return {"emitted": True}


register_blueprint(
    {
        "id": "traced",
        "nodes": [
            {"id": "first", "uses": "echo"},
            {"id": "emit", "uses": "emit-traced"},
        ],
        "edges": [{"source": "first", "target": "emit"}],
    }
)
