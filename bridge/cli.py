"""The ``flowbridge`` command line: parses arguments and delegates.

Kafka, Celery and the state store are imported by the commands that use them,
not at start, so ``flowbridge --help`` (and a typo) answer at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.cli_operate import add_parsers, json_arg
from state.constants import (
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PAUSED,
    RUN_PENDING,
    RUN_RUNNING,
    RUN_WAITING,
)
from state.errors import FlowbridgeError

if TYPE_CHECKING:
    from bridge.api import Queries
    from bridge.client import Client

__all__ = ["build_parser", "main"]

EXIT = {"completed": 0, "failed": 1, "cancelled": 3}
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
#: 128 + SIGPIPE, what a program killed by a closed pipe exits with.
EXIT_BROKEN_PIPE = 141
RUN_STATUSES = (
    RUN_PENDING,
    RUN_RUNNING,
    RUN_WAITING,
    RUN_PAUSED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_CANCELLED,
)
DEFAULT_TIMEOUT_S = 60.0

EPILOG = f"""\
exit codes:
  0    success; with `run --wait`: the run completed
  1    the run failed (`run --wait`), or the command could not do what was asked:
       no such run, the run has already finished (or, for `retry`, has not), the
       run id is taken by another input, a blueprint file is invalid, no such DLQ
       record
  2    bad usage or configuration (a FLOWBRIDGE_APP module that fails to import,
       Kafka or the state store unreachable)
  3    the run was cancelled (`run --wait`)
  124  `run --wait` timed out (the run goes on)
  {EXIT_BROKEN_PIPE}  standard output was closed early (piped into `head`)

Run statuses: {", ".join(RUN_STATUSES)}.
Settings come from the environment (KAFKA_BOOTSTRAP_SERVERS or KAFKA_URL, REDIS_URL,
FLOWBRIDGE_STATE_URL, FLOWBRIDGE_APP, FLOWBRIDGE_BLUEPRINTS, FLOWBRIDGE_TOPIC_PREFIX):
see docs/configuration.md. After `make dev`: `source .dev/env`.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the epilog's layout; say each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def _err(command: str, message: str) -> None:
    print(f"flowbridge {command}: {message}", file=sys.stderr)


def _queries() -> Queries:
    from bridge.api import Queries
    from tasks.runtime import open_state
    from tasks.settings import Settings

    return Queries(open_state(Settings.from_env()))


def _client() -> Client:
    from bridge.client import Client

    return Client.from_env()


class _Progress:
    """One status line on a terminal's stderr: nodes done of all, and what runs now."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.total: int | None = None

    def __call__(self, run: dict[str, Any]) -> None:
        if self.total is None:
            stored = self.client.queries.record(self.run_id)
            nodes = stored.snapshot.get("nodes", []) if stored is not None else []
            self.total = len(nodes) or None
        recs = run["nodes"]
        done = sum(1 for n in recs.values() if n["status"] not in ("pending", "running", "waiting"))
        now = [
            f"{node_id} ({n['status']}, attempt {max(n['attempts'], 1)})"
            for node_id, n in recs.items()
            if n["status"] in ("running", "waiting")
        ]
        line = f"run {self.run_id}: {run['status']}, {done}/{self.total or '?'} nodes done"
        if now:
            line += "; now: " + ", ".join(now)
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()

    def end(self) -> None:
        sys.stderr.write("\n")


def cmd_run(args: argparse.Namespace) -> int:
    """Publish a start message; with ``--wait`` print the finished run."""
    from bridge.client import RunTimeout

    if args.input is not None and not isinstance(args.input, dict):
        _err("run", "--input must be a JSON object")
        return EXIT_USAGE
    client = _client()
    try:
        run_input = {} if args.input is None else args.input
        existing = client.queries.record(args.run_id) if args.run_id else None
        if existing is not None and existing.rejected:
            # Its start was rejected (unknown blueprint, bad input): this start replaces it.
            existing = None
        if existing is not None:
            differs = existing.input != run_input or existing.blueprint_id != args.blueprint
            _err(
                "run",
                f"run {args.run_id!r} already exists ({existing.blueprint_id}@{existing.version}, "
                f"{existing.status}); it is not started again"
                + (", and its blueprint or input differs from this one" if differs else ""),
            )
            if differs:
                return EXIT_ERROR
            handle = client.handle(args.run_id)
        else:
            handle = client.start(
                args.blueprint, args.input, run_id=args.run_id, version=args.version
            )
        if not args.wait:
            _print({"run_id": handle.run_id})
            return 0
        progress = _Progress(client, handle.run_id) if sys.stderr.isatty() else None
        try:
            run = handle.result(timeout=args.timeout, on_change=progress)
        except RunTimeout as exc:
            if progress:
                progress.end()
            _err("run", str(exc))
            current = handle.run()
            if current is not None:
                _print(current)
            return EXIT_TIMEOUT
        if progress:
            progress.end()
        _print(run)
        return EXIT.get(str(run["status"]), EXIT_ERROR)
    finally:
        client.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Print one run."""
    view = _queries().run(args.run_id)
    if view is None:
        _err("status", f"no run {args.run_id!r}")
        return EXIT_ERROR
    if args.json:
        _print(view)
        return 0
    attempt = f"  (attempt {view['attempt']})" if view["attempt"] > 1 else ""
    print(f"run {view['run_id']}  {view['blueprint']}@{view['version']}  {view['status']}{attempt}")
    if view["error"]:
        print(f"  error: {view['error']}")
    for node_id, n in view["nodes"].items():
        line = f"  {node_id:<24} {n['status']:<10} attempts={n['attempts']}"
        if "waits" in n:
            waits = n["waits"]
            what = [f"event {waits['event']!r}"] if waits.get("event") else []
            what += [f"until {waits['due_at']}"] if waits.get("due_at") else []
            line += "  waits for " + (" or ".join(what) or "?")
        if "lease" in n:
            left = dt.datetime.fromisoformat(n["lease"]["until"]).timestamp() - time.time()
            state = f"lease {left:.0f}s left" if left >= 0 else f"lease expired {-left:.0f}s ago"
            line += f"  on {n['lease']['by']} ({state})"
        if n["error"]:
            line += f"  error: {n['error']}"
        print(line)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List recent runs."""
    runs = _queries().runs(status=args.status, blueprint=args.blueprint, limit=args.limit)
    if not runs:
        what = f"runs with status {args.status!r}" if args.status else "runs"
        print(f"no {what} in {_state_url()}", file=sys.stderr)
    for run in runs:
        # A start rejected before it was created has no version: say so, not "order@".
        print(f"{run['run_id']}  {run['blueprint']}@{run['version'] or '-'}  {run['status']}")
    return 0


def _state_url() -> str:
    from tasks.settings import Settings

    return Settings.from_env().state_url.split("@")[-1]


def cmd_cancel(args: argparse.Namespace) -> int:
    """Publish a cancel message for a run that exists and has not finished."""
    from bridge.errors import RunStateError

    client = _client()
    try:
        run = client.queries.record(args.run_id)
        try:
            client.commands.cancel(args.run_id, args.reason, check=not (run is None and args.force))
        except RunStateError as exc:
            problem = str(exc)
            if exc.status is None:
                problem += " (if its start is still on its way, --force leaves a cancel marker)"
            _err("cancel", problem)
            return EXIT_ERROR
    finally:
        client.close()
    _print({"run_id": args.run_id, "cancel": "requested" if run else "marker requested"})
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    """Publish an event for a run that exists and has not finished."""
    from bridge.errors import RunStateError

    client = _client()
    try:
        try:
            event_id = client.commands.signal(
                args.run_id, args.name, args.payload, event_id=args.event_id, check=True
            )
        except RunStateError as exc:
            _err("signal", str(exc))
            return EXIT_ERROR
    finally:
        client.close()
    _print({"run_id": args.run_id, "event": args.name, "event_id": event_id})
    return 0


def cmd_resume_wait(args: argparse.Namespace) -> int:
    """Resume a parked wait of a run that exists and has not finished (``resume RUN NODE``)."""
    from bridge.errors import RunStateError

    client = _client()
    try:
        try:
            event_id = client.commands.resume(
                args.run_id,
                args.node,
                output=args.output,
                action=args.action,
                event_id=args.event_id,
                check=True,
            )
        except RunStateError as exc:
            _err("resume", str(exc))
            return EXIT_ERROR
    finally:
        client.close()
    _print({"run_id": args.run_id, "node": args.node, "event_id": event_id})
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the given blueprint files; node names are checked when FLOWBRIDGE_APP is set."""
    from tasks.blueprint.loader import file_problems
    from tasks.loading import import_app
    from tasks.registry import nodes
    from tasks.settings import Settings

    settings = Settings.from_env()
    known = None
    if settings.app_modules:
        # Only the modules: the files named here are checked, not FLOWBRIDGE_BLUEPRINTS.
        import_app(settings)
        known = nodes.names()
    else:
        print("note: FLOWBRIDGE_APP is not set; node names (uses) are not checked", file=sys.stderr)
    bad = 0
    for name in dict.fromkeys(args.files):
        bp, problems = file_problems(Path(name), known_uses=known, max_delay_s=settings.max_delay_s)
        if problems:
            bad += 1
            what = f"blueprint {bp.id!r} " if bp is not None and bp.id != "?" else ""
            print(f"{name}: {what}is invalid:")
            for problem in problems:
                print(f"  - {problem}")
        elif bp is not None:
            print(f"{name}: ok ({bp.id}@{bp.version}, {len(bp.nodes)} nodes)")
    return EXIT_ERROR if bad else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the state store's schema."""
    from tasks.settings import Settings

    settings = Settings.from_env()
    change = _queries().store.migrate()
    print(f"state store schema {change.describe()} ({settings.state_url.split('@')[-1]})")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Run the reconciler once and print its report."""
    from tasks.loading import load_user_code
    from tasks.reconciler import reconcile_once
    from tasks.settings import Settings
    from tasks.worker import runtime_from_settings

    rt = runtime_from_settings(Settings.from_env())
    load_user_code(rt.settings)
    _print(reconcile_once(rt))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay code workflow histories against the code of FLOWBRIDGE_APP; 1 if any diverges."""
    from tasks.loading import load_user_code
    from tasks.settings import Settings
    from tasks.workflow.replay import export_history, load_export, replay

    settings = Settings.from_env()
    load_user_code(settings)
    if args.save and len(args.sources) != 1:
        _err("replay", "--save writes one run's history: give one RUN_ID")
        return EXIT_USAGE
    store = None
    reports = []
    for source in args.sources:
        try:
            if Path(source).is_file():
                doc = load_export(source)
            else:
                store = store or _queries().store
                doc = export_history(store, source)
        except (LookupError, ValueError) as exc:
            _err("replay", str(exc))
            return EXIT_ERROR
        if args.save:
            Path(args.save).write_text(json.dumps(doc, indent=1) + "\n")
        reports.append(replay(doc))
    if args.json:
        _print([r.to_json() for r in reports])
    else:
        for r in reports:
            what = f"{r.run_id} ({r.workflow} v{r.version}, {r.activations} activations)"
            if r.ok:
                print(f"ok        {what}")
            else:
                print(f"DIVERGES  {what}: {r.error}")
    return 0 if all(r.ok for r in reports) else EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="flowbridge",
        description="Durable workflows for Celery, fed by Kafka.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=text, description=text, epilog=EPILOG, formatter_class=_Formatter
        )

    r = command("run", "start a run of BLUEPRINT (publishes a start message to Kafka)")
    r.add_argument("blueprint", help="blueprint id, as the bridge has it registered")
    r.add_argument(
        "--input", type=json_arg, default=None, metavar="JSON", help="run input, a JSON object"
    )
    r.add_argument(
        "--run-id",
        default=None,
        metavar="ID",
        help="the run's id (default: a new UUID); an existing run is not started again",
    )
    r.add_argument("--version", default=None, help="blueprint version (default: the newest)")
    r.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to finish and print it as JSON (progress on stderr in a terminal)",
    )
    r.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="how long --wait waits",
    )
    r.set_defaults(fn=cmd_run)

    s = command("status", "show one run and its nodes")
    s.add_argument("run_id", help="the run's id")
    s.add_argument("--json", action="store_true", help="print the run as JSON (as clients get it)")
    s.set_defaults(fn=cmd_status)

    ls = command("runs", "list recent runs, newest first")
    ls.add_argument("--status", default=None, choices=RUN_STATUSES, help="only runs in this status")
    ls.add_argument("--blueprint", default=None, metavar="ID", help="only runs of this blueprint")
    ls.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs")
    ls.set_defaults(fn=cmd_runs)

    c = command("cancel", "cancel a run that has not finished")
    c.add_argument("run_id", help="the run's id")
    c.add_argument("--reason", default=None, metavar="TEXT", help="recorded as the run's error")
    c.add_argument(
        "--force",
        action="store_true",
        help="cancel a run that does not exist yet (its start is on its way): leaves a marker "
        "that the start obeys",
    )
    c.set_defaults(fn=cmd_cancel)

    sg = command("signal", "send an event to a run that has not finished")
    sg.add_argument("run_id", help="the run's id")
    sg.add_argument("name", help="the event's name, as a wait node's params.event names it")
    sg.add_argument(
        "--payload", type=json_arg, default=None, metavar="JSON", help="event payload, JSON"
    )
    sg.add_argument(
        "--event-id",
        default=None,
        metavar="ID",
        help="dedupe id: sending the same id twice delivers once (default: a new one)",
    )
    sg.set_defaults(fn=cmd_signal)

    v = command(
        "validate",
        "check blueprint files (node names too when FLOWBRIDGE_APP is set); "
        "FLOWBRIDGE_BLUEPRINTS is not read",
    )
    v.add_argument("files", nargs="+", metavar="FILE", help="blueprint files (.json, .yaml, .yml)")
    v.set_defaults(fn=cmd_validate)

    m = command("migrate", "create or upgrade the state store schema (FLOWBRIDGE_STATE_URL)")
    m.set_defaults(fn=cmd_migrate)

    rc = command("reconcile", "one reconciler pass: fire due timers, re-dispatch stalled runs")
    rc.add_argument(
        "--once", action="store_true", help="accepted for compatibility: one pass is the default"
    )
    rc.set_defaults(fn=cmd_reconcile)
    add_parsers(command, RUN_STATUSES, resume_wait=cmd_resume_wait)

    rp = command(
        "replay",
        "replay code workflow runs' histories against the code of FLOWBRIDGE_APP, writing "
        "nothing: exits 1 if a deploy of that code would block one of them",
    )
    rp.add_argument(
        "sources",
        nargs="+",
        metavar="RUN_ID|FILE",
        help="a run id in the state store, or a history file written by --save",
    )
    rp.add_argument(
        "--save", default=None, metavar="FILE", help="also write the run's history to FILE"
    )
    rp.add_argument("--json", action="store_true", help="print the reports as JSON")
    rp.set_defaults(fn=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowbridge`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) has gone: stop quietly, and keep the interpreter's
        # final flush from raising again on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except FlowbridgeError as exc:
        _err(args.command, str(exc))
        return EXIT_USAGE
    return code
