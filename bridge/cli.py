"""The ``flowbridge`` command line: parses arguments and delegates.

Exit codes of ``run --wait``: 0 completed, 1 failed, 3 cancelled, 124 timed out;
2 for bad usage or configuration everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.client import Client, RunTimeout
from bridge.runview import run_json
from state.errors import FlowbridgeError
from tasks.blueprint import load_file, validate
from tasks.registry import nodes
from tasks.runtime import Runtime, load_user_code
from tasks.settings import Settings

__all__ = ["main"]

EXIT = {"completed": 0, "failed": 1, "cancelled": 3}
EXIT_TIMEOUT = 124
EXIT_USAGE = 2


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg} at column {exc.colno}") from None


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    """Publish a start message; with ``--wait`` print the finished run."""
    if args.input is not None and not isinstance(args.input, dict):
        print("flowbridge run: --input must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    client = Client.from_env()
    try:
        handle = client.start(args.blueprint, args.input, run_id=args.run_id, version=args.version)
        if not args.wait:
            _print({"run_id": handle.run_id})
            return 0
        try:
            run = handle.result(timeout=args.timeout)
        except RunTimeout as exc:
            print(f"flowbridge run: {exc}", file=sys.stderr)
            current = handle.run()
            if current is not None:
                _print(current)
            return EXIT_TIMEOUT
        _print(run)
        return EXIT.get(str(run["status"]), 1)
    finally:
        client.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Print one run."""
    rt = Runtime(Settings.from_env())
    run = rt.store.get_run(args.run_id)
    if run is None:
        print(f"flowbridge status: no run {args.run_id!r}", file=sys.stderr)
        return 1
    view = run_json(rt.store, run)
    if args.json:
        _print(view)
        return 0
    print(f"run {view['run_id']}  {view['blueprint']}@{view['version']}  {view['status']}")
    if view["error"]:
        print(f"  error: {view['error']}")
    for node_id, n in view["nodes"].items():
        line = f"  {node_id:<24} {n['status']:<10} attempts={n['attempts']}"
        if n["error"]:
            line += f"  error: {n['error']}"
        print(line)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List recent runs."""
    rt = Runtime(Settings.from_env())
    for run in rt.store.list_runs(status=args.status, limit=args.limit):
        print(f"{run.run_id}  {run.blueprint_id}@{run.version}  {run.status}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Publish a cancel message."""
    client = Client.from_env()
    try:
        client.cancel(args.run_id, args.reason)
    finally:
        client.close()
    _print({"run_id": args.run_id, "cancel": "requested"})
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    """Publish an event for a run."""
    client = Client.from_env()
    try:
        event_id = client.signal(args.run_id, args.name, args.payload, event_id=args.event_id)
    finally:
        client.close()
    _print({"run_id": args.run_id, "event": args.name, "event_id": event_id})
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate blueprint files; node names are checked when FLOWBRIDGE_APP is set."""
    settings = Settings.from_env()
    known = None
    if settings.app_modules:
        load_user_code(settings)
        known = nodes.names()
    else:
        print("note: FLOWBRIDGE_APP is not set; node names (uses) are not checked", file=sys.stderr)
    bad = 0
    for name in args.files:
        try:
            bp = load_file(Path(name))
        except FlowbridgeError as exc:
            print(f"{name}: {exc}")
            bad += 1
            continue
        issues = validate(bp, known_uses=known, max_delay_s=settings.max_delay_s)
        if issues:
            bad += 1
            print(f"{name}: blueprint {bp.id!r} is invalid:")
            for issue in issues:
                print(f"  - {issue}")
        else:
            print(f"{name}: ok ({bp.id}@{bp.version}, {len(bp.nodes)} nodes)")
    return 1 if bad else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the state store's schema."""
    settings = Settings.from_env()
    Runtime(settings).store.migrate()
    print(f"state store schema is up to date ({settings.state_url.split('@')[-1]})")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Run the reconciler once and print its report."""
    from tasks.reconciler import reconcile_once

    settings = Settings.from_env()
    load_user_code(settings)
    _print(reconcile_once(Runtime(settings)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="flowbridge", description="Durable workflows for Celery, fed by Kafka."
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="start a run of BLUEPRINT")
    r.add_argument("blueprint")
    r.add_argument("--input", type=_json_arg, default=None, help="run input, a JSON object")
    r.add_argument("--run-id", default=None)
    r.add_argument("--version", default=None, help="blueprint version (default: newest)")
    r.add_argument("--wait", action="store_true", help="wait and print the finished run")
    r.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (with --wait)")
    r.set_defaults(fn=cmd_run)

    s = sub.add_parser("status", help="show one run")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    ls = sub.add_parser("runs", help="list recent runs")
    ls.add_argument("--status", default=None)
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(fn=cmd_runs)

    c = sub.add_parser("cancel", help="cancel a run")
    c.add_argument("run_id")
    c.add_argument("--reason", default=None)
    c.set_defaults(fn=cmd_cancel)

    sg = sub.add_parser("signal", help="send an event to a run")
    sg.add_argument("run_id")
    sg.add_argument("name")
    sg.add_argument("--payload", type=_json_arg, default=None, help="event payload, JSON")
    sg.add_argument("--event-id", default=None, help="dedupe id (default: a new one)")
    sg.set_defaults(fn=cmd_signal)

    v = sub.add_parser("validate", help="validate blueprint files")
    v.add_argument("files", nargs="+")
    v.set_defaults(fn=cmd_validate)

    m = sub.add_parser("migrate", help="create or upgrade the state store schema")
    m.set_defaults(fn=cmd_migrate)

    rc = sub.add_parser("reconcile", help="re-dispatch stalled runs")
    rc.add_argument("--once", action="store_true", required=True)
    rc.set_defaults(fn=cmd_reconcile)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowbridge`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except FlowbridgeError as exc:
        print(f"flowbridge {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code
