"""The operator's commands of ``flowbridge``: history, retry, pause, resume and the DLQ.

Each parses its arguments and delegates to ``bridge.api`` (``Queries`` to read,
``Commands`` to act, ``DeadLetters`` for the DLQ), as the HTTP API does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.api import DeadLetters, Queries
    from bridge.client import Client

__all__ = ["add_parsers", "json_arg", "print_timeline"]

EXIT_ERROR = 1
EXIT_USAGE = 2

Command = Callable[[str, str], argparse.ArgumentParser]


def json_arg(text: str) -> Any:
    """An argument that is JSON (argparse names the option and the problem)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg} at column {exc.colno}") from None


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


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


def _dlq() -> DeadLetters:
    from bridge.api import DeadLetters
    from bridge.settings import KafkaSettings
    from tasks.settings import Settings

    return DeadLetters(settings=Settings.from_env(), kafka=KafkaSettings.from_env())


def print_timeline(rows: list[dict[str, Any]]) -> None:
    """The timeline as aligned columns: time, node, event, attempt, error."""
    print(f"{'time':<29} {'node':<20} {'event':<16} {'attempt':<8} error / detail")
    for r in rows:
        attempt = "" if r["attempt"] is None else str(r["attempt"])
        extra = r["error"] or ("" if r["detail"] is None else json.dumps(r["detail"]))
        print(f"{r['at']:<29} {r['node'] or '-':<20} {r['event']:<16} {attempt:<8} {extra}")


def cmd_history(args: argparse.Namespace) -> int:
    """Print a run's timeline."""
    queries = _queries()
    if queries.record(args.run_id) is None:
        _err("history", f"no run {args.run_id!r}")
        return EXIT_ERROR
    rows = queries.timeline(args.run_id)
    if args.json:
        _print(rows)
    else:
        print_timeline(rows)
    return 0


def _targets(args: argparse.Namespace, command: str) -> list[str] | None:
    """The run ids a command acts on: the one named, or those the filter selects."""
    if args.run_id:
        if args.status or args.blueprint:
            _err(command, "name a run, or select runs with --status/--blueprint, not both")
            return None
        return [args.run_id]
    if not (args.status or args.blueprint):
        _err(command, "name a run (RUN_ID), or select runs with --status and/or --blueprint")
        return None
    runs = _queries().records(status=args.status, blueprint=args.blueprint, limit=args.limit)
    return [r.run_id for r in runs]


def _act(args: argparse.Namespace, command: str, act: Callable[[Client, str], None]) -> int:
    from bridge.errors import RunStateError

    targets = _targets(args, command)
    if targets is None:
        return EXIT_USAGE
    client = _client()
    done: list[str] = []
    refused: list[dict[str, str]] = []
    try:
        for run_id in targets:
            try:
                act(client, run_id)
                done.append(run_id)
            except RunStateError as exc:
                refused.append({"run_id": run_id, "reason": str(exc)})
                _err(command, str(exc))
    finally:
        client.close()
    _print({command: "requested", "runs": done, "refused": refused})
    if args.run_id and refused:
        return EXIT_ERROR
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Publish retries of finished runs."""
    nodes = list(args.from_nodes or ())
    return _act(args, "retry", lambda c, r: c.commands.retry(r, nodes, check=True))


def cmd_pause(args: argparse.Namespace) -> int:
    """Publish pauses."""
    return _act(args, "pause", lambda c, r: c.commands.pause(r, check=True))


def cmd_resume(args: argparse.Namespace) -> int:
    """Publish resumes of paused runs, or (``RUN NODE``) of one run's parked wait."""
    if args.node is not None:
        if args.run_id is None or args.status or args.blueprint:
            _err("resume", "a node is resumed in one run: flowbridge resume RUN_ID NODE")
            return EXIT_USAGE
        return int(args.resume_wait(args))
    if args.output is not None or args.action is not None or args.event_id is not None:
        _err("resume", "--output, --action and --event-id resume a node: name it after RUN_ID")
        return EXIT_USAGE
    return _act(args, "resume", lambda c, r: c.commands.unpause(r, check=True))


def _since(text: str) -> float:
    """``--since``: an ISO time, or an age such as ``30m``, ``2h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC).timestamp() - float(text[:-1]) * units[text[-1]]
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (ISO, e.g. 2026-01-31T12:00) or an age (30m, 2h, 1d)"
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def cmd_dlq(args: argparse.Namespace) -> int:
    """List, show or replay dead-lettered records."""
    from bridge.errors import DeadLetterError

    dlq = _dlq()
    try:
        if args.dlq_command == "list":
            letters = dlq.read(since=args.since, reason=args.reason)
            if args.json:
                _print([d.json() for d in letters])
                return 0
            if not letters:
                print(f"no records in {dlq.topic}", file=sys.stderr)
            for d in letters:
                at = datetime.fromtimestamp(d.timestamp, UTC).isoformat(timespec="seconds")
                print(f"{d.ref:<8} {at}  from {d.origin}  {d.reason}")
            return 0
        if args.dlq_command == "show":
            _print(dlq.find(args.offset).json())
            return 0
        if not (args.all or args.offset):
            _err("dlq replay", "say which: --offset PARTITION:N (or N), or --all")
            return EXIT_USAGE
        pool = dlq.read(since=args.since, reason=args.reason)
        chosen = pool if args.all else [dlq.find(args.offset, pool)]
        replayed = dlq.replay(chosen, dry_run=args.dry_run)
        _print(
            {
                "dry_run": args.dry_run,
                "replayed": [
                    {"ref": d.ref, "to": d.source_topic, "of": d.origin} for d in replayed
                ],
            }
        )
        return 0
    except DeadLetterError as exc:
        _err(f"dlq {args.dlq_command}", str(exc))
        return EXIT_ERROR
    finally:
        dlq.close()


def _selection(p: argparse.ArgumentParser, statuses: tuple[str, ...]) -> None:
    p.add_argument("run_id", nargs="?", default=None, metavar="RUN_ID", help="the run's id")
    p.add_argument("--status", default=None, choices=statuses, help="every run in this status")
    p.add_argument("--blueprint", default=None, metavar="ID", help="every run of this blueprint")
    p.add_argument(
        "--limit", type=int, default=100, metavar="N", help="with a filter: at most N runs"
    )


def add_parsers(
    command: Command,
    statuses: tuple[str, ...],
    *,
    resume_wait: Callable[[argparse.Namespace], int],
) -> None:
    """Add history, retry, pause, resume and dlq to the parser ``command`` makes entries in.

    ``resume RUN NODE`` (a parked wait, flowcraft's resume) is handled by ``resume_wait``.
    """
    h = command("history", "show a run's timeline: time, node, event, attempt, error")
    h.add_argument("run_id", help="the run's id")
    h.add_argument("--json", action="store_true", help="print the timeline as JSON")
    h.set_defaults(fn=cmd_history)

    r = command(
        "retry",
        "re-run a finished run from a node, keeping the outputs before it (a new attempt "
        "of the same run); or every run a filter selects",
    )
    _selection(r, statuses)
    r.add_argument(
        "--from",
        dest="from_nodes",
        action="append",
        metavar="NODE",
        help="re-run from this node and everything after it (repeatable; default: the "
        "failed nodes, or the start nodes of a run that completed)",
    )
    r.set_defaults(fn=cmd_retry)

    p = command("pause", "stop dispatching a run's nodes (in-flight nodes finish)")
    _selection(p, statuses)
    p.set_defaults(fn=cmd_pause)
    u = command(
        "resume",
        "continue a paused run (or every run a filter selects); with NODE, resume that parked "
        "wait (or sleep) of the run instead: it completes with --output, --action chooses "
        "its edges",
    )
    _selection(u, statuses)
    u.add_argument("node", nargs="?", default=None, metavar="NODE", help="a waiting node's id")
    u.add_argument("--action", default=None, metavar="A", help="the node's action (its edges)")
    u.add_argument(
        "--output", type=json_arg, default=None, metavar="JSON", help="the node's output, JSON"
    )
    u.add_argument(
        "--event-id",
        default=None,
        metavar="ID",
        help="dedupe id: resuming a node with the same id twice resumes once (default: a new one)",
    )
    u.set_defaults(fn=cmd_resume, resume_wait=resume_wait)

    d = command("dlq", "list, show or replay records the bridge dead-lettered")
    sub = d.add_subparsers(
        dest="dlq_command", required=True, metavar="ACTION", help="list, show or replay"
    )
    for name, text in (
        ("list", "list dead-lettered records, oldest first"),
        ("replay", "re-produce records to their source topic (idempotent by the original)"),
    ):
        a = sub.add_parser(name, help=text, description=text)
        a.add_argument(
            "--since", type=_since, default=None, metavar="TIME", help="ISO time or age (2h)"
        )
        a.add_argument("--reason", default=None, metavar="TEXT", help="reason contains TEXT")
        if name == "list":
            a.add_argument("--json", action="store_true", help="print the records as JSON")
        else:
            a.add_argument("--offset", default=None, metavar="[P:]N", help="the record to replay")
            a.add_argument("--all", action="store_true", help="every record (that matches)")
            a.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    s = sub.add_parser("show", help="print one record as JSON", description="print one record")
    s.add_argument("offset", metavar="[P:]N", help="partition:offset, or offset")
    d.set_defaults(fn=cmd_dlq)
