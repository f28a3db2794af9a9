"""`make dev`: local Kafka (tansu) and Redis, the Procfile's bridge, worker and beat, the example.

Everything runs on the embedded defaults: state in .dev/flowbridge.db (SQLite),
services on free ports, logs under .dev/. With a terminal attached the stack
keeps running after the example (Ctrl-C stops it); without one it stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowbridge.dev import start_redis, start_tansu  # noqa: E402

BIN = Path(sys.executable).parent
EXAMPLE_INPUT = {"items": [{"sku": "book", "price": 12.5, "qty": 2}, {"sku": "pen", "price": 3}]}


def main() -> int:
    dev = ROOT / ".dev"
    dev.mkdir(exist_ok=True)
    kafka = start_tansu(log_dir=dev)
    redis = start_redis(log_dir=dev)
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka.url,
        REDIS_URL=redis.url,
        FLOWBRIDGE_STATE_URL=f"sqlite:///{dev / 'flowbridge.db'}",
        FLOWBRIDGE_APP="examples.shop",
        FLOWBRIDGE_BLUEPRINTS=str(ROOT / "examples" / "blueprints"),
        FLOWBRIDGE_BEAT_SCHEDULE=str(dev / "beat-schedule"),
        PYTHONPATH=str(ROOT),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    print(f"kafka (tansu): {kafka.url}   redis: {redis.url}   state: {env['FLOWBRIDGE_STATE_URL']}")
    (dev / "env").write_text(
        "".join(
            f"export {k}={env[k]}\n"
            for k in (
                "KAFKA_BOOTSTRAP_SERVERS",
                "REDIS_URL",
                "FLOWBRIDGE_STATE_URL",
                "FLOWBRIDGE_APP",
                "FLOWBRIDGE_BLUEPRINTS",
                "PYTHONPATH",
            )
        )
    )
    subprocess.run([str(BIN / "flowbridge"), "migrate"], env=env, check=True, cwd=ROOT)
    with open(dev / "procs.log", "w") as procs_log:
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
            stdout=procs_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    code = 1
    try:
        print(
            "bridge, worker and beat starting (logs: .dev/procs.log); running the example order ..."
        )
        t0 = time.monotonic()
        result = subprocess.run(
            [
                str(BIN / "flowbridge"),
                "run",
                "order",
                "--input",
                json.dumps(EXAMPLE_INPUT),
                "--wait",
                "--timeout",
                "90",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
        code = result.returncode
        print(
            f"example finished with exit code {code} after {time.monotonic() - t0:.1f}s "
            "(includes the bridge joining its consumer group)"
        )
        if sys.stdin.isatty() and code == 0:
            print(
                "\nThe stack keeps running. In another shell: "
                "source .dev/env && .venv/bin/flowbridge runs"
            )
            print("Ctrl-C stops it.")
            honcho.wait()
    except KeyboardInterrupt:
        pass
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
        kafka.stop()
        redis.stop()
    if code != 0:
        print("the example did not complete; see .dev/procs.log", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
