"""DBOS Transact's side of scenario 6, in a process of its own.

``python -m bench.dbos_worker --database-url URL --runs N --out FILE`` launches
DBOS on the given PostgreSQL (its system database; DBOS creates it), runs a
few warm-up workflows, then ``N`` workflows of ``STEPS`` sequential no-op
steps, each called directly (the workflow runs in the calling thread and
checkpoints every step in PostgreSQL), and writes their latencies (ms) to
``FILE`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dbos import DBOS

STEPS = 10


@DBOS.step()
def step(i: int) -> int:
    return i


@DBOS.workflow()
def workflow() -> int:
    total = 0
    for i in range(STEPS):
        total += step(i)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_worker")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    DBOS(
        config={
            "name": "flowbridge-bench",
            "system_database_url": args.database_url,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        for _ in range(args.warmup):
            workflow()
        latencies = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            workflow()
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        DBOS.destroy()
    Path(args.out).write_text(json.dumps(latencies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
