"""The bridge's blueprint reload: files added, changed and removed on disk reach the registry;
an invalid file is reported and the previous version kept."""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from bridge.reload import BlueprintWatcher
from tasks.errors import UnknownBlueprintError
from tasks.registry import BlueprintRegistry

USES = {"echo", "charge"}


def write(path: Path, bp: dict[str, Any]) -> None:
    path.write_text(json.dumps(bp))
    # Distinct modification times even on coarse file systems.
    stamp = path.stat().st_mtime_ns + 10_000_000 * (1 + len(path.read_text()))
    os.utime(path, ns=(stamp, stamp))


def linear(bid: str, *nodes: str, version: str = "1") -> dict[str, Any]:
    return {
        "id": bid,
        "metadata": {"version": version},
        "nodes": [{"id": n, "uses": "echo"} for n in nodes],
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(nodes)],
    }


def watcher(registry: BlueprintRegistry, *dirs: Path) -> BlueprintWatcher:
    registry.load_dirs(dirs)
    return BlueprintWatcher(
        registry=registry,
        directories=dirs,
        known_uses=lambda: USES,
        max_delay_s=300,
        interval_s=2,
    )


def test_added_changed_and_removed_files_reach_the_registry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write(one / "a.json", linear("a", "x"))
    registry = BlueprintRegistry()
    w = watcher(registry, one, two)
    assert w.reload() == [], "nothing changed since start-up"

    write(two / "b.yaml", linear("b", "x", "y"))
    write(one / "a.json", linear("a", "x", "y", "z"))
    with caplog.at_level(logging.INFO, logger="flowbridge.blueprints"):
        done = w.reload()
    assert done == [
        f"blueprint a@1 changed ({one / 'a.json'})",
        f"blueprint b@1 added ({two / 'b.yaml'})",
    ]
    assert [r.getMessage() for r in caplog.records] == done, "each change is logged"
    assert registry.get("a").node_ids == ("x", "y", "z")
    assert registry.get("b").node_ids == ("x", "y")

    (one / "a.json").unlink()
    assert w.reload() == [f"blueprint a@1 removed ({one / 'a.json'} is gone)"]
    with pytest.raises(UnknownBlueprintError):
        registry.get("a")


def test_an_invalid_file_is_reported_with_its_problems_and_the_previous_version_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.json", linear("a", "x", "y"))
    registry = BlueprintRegistry()
    w = watcher(registry, tmp_path)
    broken = linear("a", "x", "y")
    broken["nodes"][1] = {"id": "y", "uses": "no-such-node", "config": {"maxRetry": 1}}
    write(tmp_path / "a.json", broken)
    with caplog.at_level(logging.ERROR, logger="flowbridge.blueprints"):
        (report,) = w.reload()
    assert "unknown config key 'maxRetry'" in report
    assert "unknown uses 'no-such-node'" in report
    assert report.startswith(
        f"{tmp_path / 'a.json'}: invalid blueprint (keeping the previous version):"
    )
    assert caplog.records[0].levelno == logging.ERROR
    assert registry.get("a").node("y").uses == "echo", "the last good version stays"
    assert w.reload() == [], "reported once, not on every poll"

    write(tmp_path / "new.json", {"id": "new", "nodes": "not a list"})
    (report,) = w.reload()
    assert "invalid blueprint (not loaded)" in report


def test_the_same_id_and_version_in_two_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.json", linear("a", "x"))
    registry = BlueprintRegistry()
    w = watcher(registry, tmp_path)
    write(tmp_path / "copy.json", linear("a", "x", "y"))
    (report,) = w.reload()
    assert f"is also defined in {tmp_path / 'a.json'}" in report
    assert registry.get("a").node_ids == ("x",)
    write(tmp_path / "copy.json", linear("a", "x", "y", version="2"))
    assert w.reload() == [f"blueprint a@2 added ({tmp_path / 'copy.json'})"]
    assert registry.get("a").version == "2", "the newest version is the default"


def test_poll_waits_for_its_interval(tmp_path: Path) -> None:
    now = [0.0]
    registry = BlueprintRegistry()
    w = BlueprintWatcher(
        registry=registry,
        directories=[tmp_path],
        known_uses=lambda: USES,
        max_delay_s=None,
        interval_s=2,
        clock=lambda: now[0],
    )
    write(tmp_path / "a.json", linear("a", "x"))
    w.poll()
    with pytest.raises(UnknownBlueprintError):
        registry.get("a")
    now[0] = 2.0
    w.poll()
    assert registry.get("a").id == "a"
