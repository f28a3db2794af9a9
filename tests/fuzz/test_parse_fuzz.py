"""The bridge's parsers on generated records: a ``MessageError`` with a reason, or a message.

In process and fast; the same records go through a real bridge in ``test_bridge_fuzz.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace

from bridge.errors import MessageError
from bridge.headers import dead_letter_headers, origin_of, trace_of
from bridge.kafka_workflow import is_kw, parse_kw
from bridge.messages import parse_event, parse_job
from tests.fuzz.records import MAX_BYTES, generate

COUNT = int(os.environ.get("FLOWBRIDGE_FUZZ_RECORDS", "1000"))


def test_every_generated_record_parses_or_names_its_problem() -> None:
    kinds: dict[str, int] = {}
    for n, r in enumerate(generate(max(COUNT, 1000), seed=7)):
        rec = SimpleNamespace(
            topic=r.topic, partition=0, offset=n, key=r.key, value=r.value, headers=r.headers
        )
        trace_of(rec)
        origin_of(rec)
        try:
            parsed: object
            if r.topic == "kw" or (r.topic == "events" and is_kw(r.value)):
                parsed = parse_kw(
                    r.value or b"",
                    key=r.key,
                    headers=r.headers,
                    default_workflow=None,
                    max_bytes=MAX_BYTES,
                )
            elif r.topic == "events":
                parsed = parse_event(r.value, max_bytes=MAX_BYTES)
            else:
                parsed = parse_job(r.value, max_bytes=MAX_BYTES)
            # What is accepted must be storable: UTF-8 text all through.
            json.dumps(dataclasses.asdict(parsed), ensure_ascii=False).encode()
        except MessageError as exc:
            assert exc.reason.strip(), r
            dead_letter_headers(rec, exc.reason)  # the reason must travel as a header
            kinds[r.kind.split(":")[0]] = kinds.get(r.kind.split(":")[0], 0) + 1
    assert len(kinds) >= 9, kinds  # "unknown" names fail later, in the bridge
