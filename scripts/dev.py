"""`make dev`: local Kafka (tansu) and Redis, the Procfile's bridge, worker and beat, a first run.

Everything runs on the embedded defaults: state in .dev/flowbridge.db (SQLite),
services on free ports, logs in .dev/procs.log. Your own code runs when
FLOWBRIDGE_APP and/or FLOWBRIDGE_BLUEPRINTS are set (PYTHONPATH is honoured);
with neither set, the example shop and its `order` blueprint run.

The stack keeps running after the first run when a terminal is attached or
with --keep (`make dev KEEP=1`), until Ctrl-C or SIGTERM; otherwise it stops
and says so. Stopping stops everything this script started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowbridge.dev import Service, free_port, start_redis, start_tansu  # noqa: E402

BIN = Path(sys.executable).parent
EXAMPLE_APP = "examples.shop"
EXAMPLE_BLUEPRINTS = ROOT / "examples" / "blueprints"
EXAMPLE_INPUT = {"items": [{"sku": "book", "price": 12.5, "qty": 2}, {"sku": "pen", "price": 3}]}
#: honcho SIGKILLs what has not stopped 5 s after its SIGTERM (fixed in honcho 2.0): the
#: worker's soft shutdown and the bridge's drain must end before that in dev.
DEV_DEFAULTS = {
    "FLOWBRIDGE_SOFT_SHUTDOWN_S": "3",
    "FLOWBRIDGE_SHUTDOWN_S": "3",
    # tansu accepts short sessions: the bridge's consumer group forms in ~1 s, not ~3 s.
    "FLOWBRIDGE_SESSION_TIMEOUT_MS": "2000",
}
ENV_FILE_KEYS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_URL",
    "FLOWBRIDGE_STATE_URL",
    "FLOWBRIDGE_APP",
    "FLOWBRIDGE_BLUEPRINTS",
    "FLOWBRIDGE_BRIDGE_METRICS_PORT",
    "FLOWBRIDGE_WORKER_METRICS_PORT",
    "PYTHONPATH",
    "PATH",
)
READY_TIMEOUT_S = 90.0
#: Lines of .dev/procs.log that say a process is up (honcho prefixes them with its name).
READY_MARKS = {"bridge": "bridge consuming", "worker": "ready."}


class Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop the stack."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of `scripts/dev.py` (`make dev`)."""
    p = argparse.ArgumentParser(
        prog="scripts/dev.py",
        description=__doc__.split("\n\n")[0].replace("`", ""),
        epilog=(
            "Your own workflow: FLOWBRIDGE_APP=mynodes FLOWBRIDGE_BLUEPRINTS=./blueprints "
            "PYTHONPATH=. make dev KEEP=1 (see README, 'Run your own workflow locally'). "
            "In another shell: source .dev/env, then flowbridge ..."
        ),
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack up after the first run even without a terminal "
        "(make dev KEEP=1); stop it with Ctrl-C or SIGTERM",
    )
    p.add_argument(
        "--run",
        metavar="BLUEPRINT",
        default=None,
        help="run this blueprint once the stack is up (default: the example's `order` "
        "when FLOWBRIDGE_APP and FLOWBRIDGE_BLUEPRINTS are unset, else nothing)",
    )
    p.add_argument("--input", metavar="JSON", default="{}", help="input of the --run run")
    p.add_argument(
        "--dir",
        type=Path,
        default=ROOT / ".dev",
        help="where state, logs and the env file go (default: .dev)",
    )
    return p.parse_args(argv)


def user_env(base: dict[str, str], cwd: Path) -> tuple[dict[str, str], bool]:
    """FLOWBRIDGE_APP, FLOWBRIDGE_BLUEPRINTS and PYTHONPATH: the user's, or the example's.

    Relative paths are resolved against ``cwd`` (the processes run in the repository root).
    Returns the variables and whether they are the example's.
    """

    def absolute(value: str) -> str:
        parts = [p for p in value.split(os.pathsep) if p.strip()]
        return os.pathsep.join(str((cwd / p.strip()).resolve()) for p in parts)

    app = base.get("FLOWBRIDGE_APP", "").strip()
    blueprints = base.get("FLOWBRIDGE_BLUEPRINTS", "").strip()
    example = not app and not blueprints
    env: dict[str, str] = {}
    if example:
        env["FLOWBRIDGE_APP"] = EXAMPLE_APP
        env["FLOWBRIDGE_BLUEPRINTS"] = str(EXAMPLE_BLUEPRINTS)
    else:
        env["FLOWBRIDGE_APP"] = app
        env["FLOWBRIDGE_BLUEPRINTS"] = absolute(blueprints)
    # flowbridge first (a user's tasks.py must not shadow our tasks package), then the
    # user's PYTHONPATH, then the directory dev.py was started from.
    paths = [str(ROOT), *absolute(base.get("PYTHONPATH", "")).split(os.pathsep), str(cwd)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    return env, example


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """`source .dev/env` gives a shell the stack's settings and `flowbridge` on PATH."""
    lines = [f"export {k}={shlex.quote(env[k])}\n" for k in ENV_FILE_KEYS if env.get(k)]
    path.write_text("".join(lines))


def wait_ready(honcho: subprocess.Popen[bytes], log: Path) -> str | None:
    """Wait until the bridge and the worker are up; None if honcho stopped first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        lines = text.splitlines()
        up = all(
            any(f" {name}.1 " in line and mark in line for line in lines)
            for name, mark in READY_MARKS.items()
        )
        if up:
            loaded = [line.split("blueprints: ", 1)[1] for line in lines if "blueprints: " in line]
            return loaded[0] if loaded else "none"
        if honcho.poll() is not None:
            return None
        time.sleep(0.2)
    raise TimeoutError(f"the stack did not come up within {READY_TIMEOUT_S:.0f}s; see {log}")


def why_it_stopped(log: Path) -> str:
    """What the processes that could not start said (each cause once), else the log's tail."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    causes: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if "cannot start the" not in line or " | " not in line:
            continue
        prefix, text = line.split(" | ", 1)
        name = prefix.split()[-1]
        # The message's further lines (each bad file, each problem) follow with the same name.
        more = []
        for nxt in lines[i + 1 : i + 40]:
            head, _, rest = nxt.partition(" | ")
            if head.split()[-1:] != [name] or not rest.startswith(("/", "  ", "(")):
                break
            more.append(rest)
        cause = "\n".join([text.split("cannot start the ", 1)[1].split(": ", 1)[1], *more])
        causes.setdefault(cause, []).append(name.split(".")[0])
    if not causes:
        return "\n".join(lines[-15:])
    return "\n".join(f"{', '.join(who)}: {cause}" for cause, who in causes.items())


def stop_all(honcho: subprocess.Popen[bytes] | None, services: list[Service]) -> None:
    """Stop honcho and everything under it, then Kafka and Redis; nothing is left behind."""
    if honcho is not None:
        try:
            tree = psutil.Process(honcho.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if honcho.poll() is None:
            # honcho forwards SIGTERM to each process's group and waits for them.
            os.killpg(honcho.pid, signal.SIGTERM)
            try:
                honcho.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait()
        # Children in sessions of their own survive a SIGKILLed honcho: end them by pid.
        _, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    for service in reversed(services):
        service.stop()


def run_flowbridge(env: dict[str, str], *args: str) -> int:
    """Run the `flowbridge` CLI with the stack's environment; its output passes through."""
    return subprocess.run(
        [str(BIN / "flowbridge"), *args], env=env, cwd=ROOT, check=False
    ).returncode


def main(argv: list[str] | None = None) -> int:
    """Start the stack, run the first workflow, keep it up or stop it."""
    args = parse_args(argv)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the cleanup must not be cut short
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    dev: Path = args.dir.resolve()
    dev.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    honcho: subprocess.Popen[bytes] | None = None
    code = 0
    try:
        services.append(kafka := start_tansu(log_dir=dev))
        services.append(redis := start_redis(log_dir=dev))
        chosen, example = user_env(dict(os.environ), Path.cwd())
        env = {**DEV_DEFAULTS, **os.environ, **chosen}
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=kafka.url,
            REDIS_URL=redis.url,
            FLOWBRIDGE_STATE_URL=f"sqlite:///{dev / 'flowbridge.db'}",
            FLOWBRIDGE_BEAT_SCHEDULE=str(dev / "beat-schedule"),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        # One host: each process serves /metrics on a port of its own (the Procfile reads them).
        env.setdefault("FLOWBRIDGE_BRIDGE_METRICS_PORT", str(free_port()))
        env.setdefault("FLOWBRIDGE_WORKER_METRICS_PORT", str(free_port()))
        state = env["FLOWBRIDGE_STATE_URL"]
        print(f"kafka (tansu): {kafka.url}   redis: {redis.url}   state: {state}")
        print(
            f"FLOWBRIDGE_APP={env['FLOWBRIDGE_APP'] or '(unset)'}  "
            f"FLOWBRIDGE_BLUEPRINTS={env['FLOWBRIDGE_BLUEPRINTS'] or '(unset)'}"
            + ("  (the example; set them to run your own)" if example else "")
        )
        write_env_file(dev / "env", env)
        if (code := run_flowbridge(env, "migrate")) != 0:
            return code
        procs_log = dev / "procs.log"
        with open(procs_log, "w") as out:
            honcho = subprocess.Popen(
                [
                    str(BIN / "honcho"),
                    "-f",
                    str(ROOT / "Procfile"),
                    "start",
                    "bridge",
                    "worker",
                    "beat",
                ],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        print(f"bridge, worker and beat starting (logs: {procs_log}) ...")
        loaded = wait_ready(honcho, procs_log)
        if loaded is None:
            print(f"the stack stopped during start-up ({procs_log}):", file=sys.stderr)
            print(why_it_stopped(procs_log), file=sys.stderr)
            return 1
        print(f"up: bridge, worker, beat; blueprints: {loaded}")
        print(
            f"metrics: http://127.0.0.1:{env['FLOWBRIDGE_BRIDGE_METRICS_PORT']}/metrics (bridge), "
            f"http://127.0.0.1:{env['FLOWBRIDGE_WORKER_METRICS_PORT']}/metrics (worker)"
        )
        first = args.run or ("order" if example else None)
        if first is not None:
            run_input = json.dumps(EXAMPLE_INPUT) if args.run is None else args.input
            print(f"running {first} ...")
            t0 = time.monotonic()
            code = run_flowbridge(
                env, "run", first, "--input", run_input, "--wait", "--timeout", "90"
            )
            print(f"{first} finished with exit code {code} after {time.monotonic() - t0:.1f}s")
        if args.keep or sys.stdin.isatty():
            print(
                f"\nThe stack keeps running. In another shell: source {_shown(dev / 'env')}"
                " && flowbridge runs"
            )
            print("Ctrl-C (or SIGTERM) stops it.", flush=True)
            honcho.wait()
            print(f"the stack stopped by itself; see {procs_log}", file=sys.stderr)
            return 1
        print(
            "\nNo terminal and no --keep: stopping the stack now "
            "(make dev KEEP=1, or scripts/dev.py --keep, keeps it running).",
            flush=True,
        )
    except (KeyboardInterrupt, Stop):
        print("\nstopping the stack ...", flush=True)
    finally:
        stop_all(honcho, services)
    print("stopped: bridge, worker, beat, kafka, redis", flush=True)
    return code


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
