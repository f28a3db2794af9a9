"""The flowcraft compatibility suite: flowcraft's own test scenarios, run on flowbridge.

Each test names the flowcraft test it comes from (``packages/core`` of GitHub
``gorango/flowcraft``: file, ``describe`` and ``it``) in its docstring; tests
whose outcome differs on purpose say so and name the row of "Differences from
flowcraft" in ``docs/blueprints.md``. The meaning is ported, not the code.
"""

from __future__ import annotations

from collections import Counter

import pytest


@pytest.fixture
def calls() -> Counter[str]:
    """How often each node's function ran."""
    return Counter()
