"""``python -m bench``: run the scenarios, print the table, write JSON and the doc."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench.harness import ROOT, BenchError, Env, Processes, ScenarioSkipped
from bench.kafka_scenarios import BridgeIngest, StartLatency
from bench.model import FULL, QUICK, SMOKE, ScenarioResult
from bench.peer import VersusDbos
from bench.profiling import Profiler, ProfileRun, analyse, compact, pyspy_binary
from bench.report import (
    machine,
    machine_markdown,
    profile_markdown,
    results_markdown,
    update_doc,
    write_json,
)
from bench.scenarios import Ctx, FanOut, IndependentRuns, LinearChain, Scenario
from bench.store_scenarios import StoreRatio

__all__ = ["main"]

ALL: dict[str, Scenario] = {
    s.key: s
    for s in (
        LinearChain(),
        IndependentRuns(),
        FanOut(),
        BridgeIngest(),
        StartLatency(),
        VersusDbos(),
        StoreRatio(),
    )
}
PROFILABLE = ("chain", "runs", "fanout", "ingest")
RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"


def log(msg: str) -> None:
    print(msg, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="flowbridge against raw Celery, a raw Kafka consumer and DBOS, side by side.",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes, 3 repetitions (~2 min)")
    p.add_argument(
        "--only",
        default=",".join(ALL),
        help=f"comma-separated scenarios to run (default: all of {','.join(ALL)})",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds per scenario: only shows every scenario still gives a ratio",
    )
    p.add_argument("--reps", type=int, help="repetitions per side (at least 3)")
    p.add_argument(
        "--max-reps",
        type=int,
        help="add paired repetitions up to this many while a target's interval straddles it"
        " (default 15; 8 with --quick)",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="profile flowbridge scenarios with py-spy, one extra run each: auto (every one"
        " that missed its target, else the closest to missing), none, or a comma-separated list"
        f" of {','.join(PROFILABLE)} (default: auto; none with --quick)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker")
    p.add_argument(
        "--json",
        type=Path,
        help="results file (default bench/results/latest.json, quick.json with --quick)",
    )
    p.add_argument(
        "--doc",
        type=Path,
        help="Markdown file to update (default docs/performance.md;"
        " not updated with --quick unless given)",
    )
    p.add_argument("--no-doc", action="store_true", help="do not update any Markdown file")
    p.add_argument("--workdir", type=Path, help="where logs and SQLite files go (default: temp)")
    p.add_argument("--keep-workdir", action="store_true", help="keep logs even after success")
    args = p.parse_args(argv)
    unknown = [k for k in args.only.split(",") if k and k not in ALL]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    if args.reps is not None and args.reps < 3:
        p.error("--reps must be at least 3")
    if args.profile not in (None, "auto", "none") and not set(args.profile.split(",")) <= set(
        PROFILABLE
    ):
        p.error(f"--profile must be auto, none or a list of {', '.join(PROFILABLE)}")
    return args


def _badness(r: ScenarioResult) -> float:
    """How far a result is from its target (> 1: missed)."""
    t = r.target
    if t is None or r.status != "ok" or r.ratio is None:
        return 0.0
    if t.kind == "ratio_min":
        return t.value / r.ratio
    return r.ratio / t.value


def _choose_profiles(choice: str, results: list[ScenarioResult]) -> list[str]:
    if choice == "none":
        return []
    if choice != "auto":
        return choice.split(",")
    by_number = {s.number: k for k, s in ALL.items() if k in PROFILABLE}
    ranked = sorted((r for r in results if r.id[:1] in by_number), key=_badness, reverse=True)
    missed = [by_number[r.id[:1]] for r in ranked if _badness(r) > 1]
    if not missed:
        missed = [by_number[r.id[:1]] for r in ranked[:1] if _badness(r) > 0]
    return list(dict.fromkeys(missed))


def _print_result(r: ScenarioResult) -> None:
    if r.status != "ok":
        log(f"  {r.id} {r.status}: {(r.reason or '').splitlines()[0]}")
        return
    from bench.report import fmt

    got = r.stats
    ratio = "-" if got is None else got.text()
    verdict = "" if r.target is None else f"  target {r.target.text}: {r.target.miss(r)}"
    log(
        f"  {r.id} {r.title}: flowbridge {fmt(r.fb_median)} {r.unit}, baseline "
        f"{fmt(r.base_median)} {r.unit}, ratio {ratio} ({len(r.flowbridge)} pairs){verdict}"
    )


def _run_profile(
    ctx: Ctx, processes: Processes, key: str, workdir: Path, keep_as: Path
) -> ProfileRun:
    """Profile one extra flowbridge run of ``key``; keep the stacks as ``<keep_as>-<key>-*``."""
    log(f"[profile] scenario {ALL[key].number} ({key}) under py-spy")
    with processes.scope():
        profiler = Profiler(processes, workdir / "profile")
        try:
            what = ALL[key].profile(ctx, profiler)
        finally:
            files = profiler.stop()
    profiles = []
    keep_as.parent.mkdir(parents=True, exist_ok=True)
    for role, path in files.items():
        kept = keep_as.with_name(f"{keep_as.name}-{key}-{role}.txt")
        compact(path, kept)
        profiles.append(analyse(kept, role))
    return ProfileRun(f"{ALL[key].number} ({key})", what, profiles)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.reps:
        sizes = replace(sizes, reps=args.reps, max_reps=max(args.reps, sizes.max_reps))
    if args.max_reps:
        sizes = replace(sizes, max_reps=max(args.max_reps, sizes.reps))
    quick = args.quick or args.smoke
    selected = [k for k in args.only.split(",") if k]
    profile_choice = args.profile or ("none" if quick else "auto")
    json_path = (
        args.json or RESULTS_DIR / f"{'latest' if sizes.name == 'full' else sizes.name}.json"
    )
    doc_path = None if args.no_doc else (args.doc or (None if quick else DOC))
    command = "python -m bench" + (f" --{sizes.name}" if quick else "")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flowbridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM both unwind through the finally blocks that stop every process
    # (SIGINT explicitly: a shell that starts a job in the background ignores it for the job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    processes = Processes(workdir)
    results: list[ScenarioResult] = []
    profile_runs: list[ProfileRun] = []
    started = time.monotonic()
    clean = False
    load_before = os.getloadavg()[0]
    log(f"flowbridge benchmarks ({sizes.name}); logs in {workdir}; load average {load_before:.2f}")
    try:
        from flowbridge.dev import start_redis, start_tansu

        with contextlib.ExitStack() as stack:
            kafka = stack.enter_context(start_tansu(log_dir=workdir))
            redis = stack.enter_context(start_redis(log_dir=workdir, databases=64))
            stack.callback(processes.stop_all)  # before the services stop
            env = Env(kafka, redis, workdir, processes, concurrency=args.concurrency)
            ctx = Ctx(env, sizes, log)
            for key in selected:
                sc = ALL[key]
                log(f"[{sc.number}] {sc.title}")
                t0 = time.monotonic()
                with processes.scope():
                    try:
                        got = sc.run(ctx)
                    except ScenarioSkipped as exc:
                        got = sc.failed(str(exc), skipped=True)
                    except BenchError as exc:
                        got = sc.failed(str(exc))
                for r in got:
                    _print_result(r)
                load = os.getloadavg()[0]
                log(f"  ({time.monotonic() - t0:.0f} s; load average {load:.2f})")
                for r in got:
                    r.extra["load_average_after"] = load
                results.extend(got)
            keys = _choose_profiles(profile_choice, results)
            if keys and pyspy_binary() is None:
                log(
                    "profiles skipped: py-spy not installed (pip install -r bench/requirements.txt)"
                )
                keys = []
            # Stacks sit next to the results they belong to: latest-profile-runs-worker.txt.
            keep_as = json_path.with_name(f"{json_path.stem}-profile")
            if keys:  # stacks from an earlier run would be mistaken for this one's
                for old in json_path.parent.glob(f"{keep_as.name}-*.txt"):
                    old.unlink()
            for key in keys:
                try:
                    profile_runs.append(_run_profile(ctx, processes, key, workdir, keep_as))
                except (BenchError, RuntimeError) as exc:
                    log(f"profile of {key} failed: {exc}")
        clean = all(r.status != "failed" for r in results)
    except KeyboardInterrupt:
        log("interrupted: every process was stopped; no results written")
        return 130
    finally:
        processes.stop_all()
        if clean and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")

    duration = time.monotonic() - started
    info = machine()
    info["load_average_before"] = load_before
    info["postgres"] = next((r.params["postgres"] for r in results if "postgres" in r.params), None)
    payload: dict[str, Any] = {
        "command": command,
        "sizes": sizes.__dict__,
        "duration_s": duration,
        "machine": info,
        "results": [r.to_json() for r in results],
        "profiles": [
            {
                "scenario": run.scenario,
                "what": run.what,
                "processes": [p.to_json() for p in run.profiles],
            }
            for run in profile_runs
        ],
    }
    write_json(json_path, payload)
    log(f"\nresults: {json_path}")
    table = results_markdown(results)
    if doc_path is not None:
        sections = {
            "machine": machine_markdown(info, sizes, duration, command),
            "results": table,
        }
        if profile_runs:
            sections["profile"] = profile_markdown(profile_runs)
        update_doc(doc_path, sections)
        log(f"doc: {doc_path}")
    log("\n" + table)
    return 1 if any(r.status == "failed" for r in results) else 0
