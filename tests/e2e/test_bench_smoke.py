"""``python -m bench --smoke``: each scenario still runs and gives a ratio with its interval.

Scenarios 6 (DBOS: starts PostgreSQL) and 7 (starts Cassandra) take a minute of
service start-up on their own; ``--smoke`` runs them, this test does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIOS = "chain,runs,fanout,ingest,latency"


def test_every_scenario_gives_a_ratio_with_an_interval(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", SCENARIOS, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    assert {r["id"][:1] for r in results} == {"1", "2", "3", "4", "5"}
    for r in results:
        assert r["status"] == "ok", r
        lo, hi = r["ratio_interval"]
        assert lo <= r["ratio"] <= hi, r
        assert len(r["flowbridge"]) == len(r["baseline"]) >= 3
        if r["target"] is not None:
            assert r["verdict"] in ("met", "missed", "undecided")
    assert "load average" in proc.stdout
