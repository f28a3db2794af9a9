"""``flowbridge validate`` on generated blueprint files: a named problem or success, never a traceback.

Files are a valid blueprint mutated (fields replaced by values of every JSON type, removed,
nested, repeated), arbitrary JSON and YAML, and random bytes. ``FLOWBRIDGE_FUZZ_EXAMPLES``
sets how many of each (``make fuzz`` runs more).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.cli import main

EXAMPLES = int(os.environ.get("FLOWBRIDGE_FUZZ_EXAMPLES", "150"))
ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = json.loads((ROOT / "examples/blueprints/order.json").read_text())

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "a", "validate", "charge", "${x}", "a &&", "validate.total >", "?"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*at, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc: Any = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(st.one_of(json_values, st.just(doc)))
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["replace", "delete", "nest", "repeat"]))
        if how == "replace":
            parent[path[-1]] = draw(json_values)
        elif how == "delete":
            del parent[path[-1]]
        elif how == "nest":
            parent[path[-1]] = (
                [parent[path[-1]]] if draw(st.booleans()) else {"x": parent[path[-1]]}
            )
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return doc


def _validate(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"bp{suffix}"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", str(path)])
    text = out.getvalue()
    assert code in (0, 1), (code, text, err.getvalue())
    if code == 0:
        assert ": ok (" in text, text
    else:
        lines = text.splitlines()
        assert lines[0].endswith("is invalid:"), text
        problems = [ln.removeprefix("  - ") for ln in lines[1:] if ln.startswith("  - ")]
        assert problems and all(p.strip() for p in problems), text


@FUZZ
@given(mutated())
def test_mutated_blueprints_are_named_problems_or_valid(doc: Any) -> None:
    _validate(".json", json.dumps(doc, allow_nan=True).encode())


@FUZZ
@given(mutated())
def test_mutated_yaml_blueprints_are_named_problems_or_valid(doc: Any) -> None:
    _validate(".yaml", yaml.safe_dump(doc, allow_unicode=True).encode())


@FUZZ
@given(json_values)
def test_any_json_document_is_a_named_problem(doc: Any) -> None:
    _validate(".json", json.dumps(doc, allow_nan=True).encode())


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".json", ".yaml", ".yml"]))
def test_random_bytes_are_a_named_problem(data: bytes, suffix: str) -> None:
    _validate(suffix, data)


@FUZZ
@given(st.integers(1, 3000), st.sampled_from(["[", '{"a":', "- "]))
def test_deeply_nested_files_are_a_named_problem(depth: int, opener: str) -> None:
    suffix = ".yaml" if opener == "- " else ".json"
    _validate(suffix, (opener * depth).encode())
