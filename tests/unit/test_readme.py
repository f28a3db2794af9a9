"""The README's commands are real: their subcommands and options exist, their paths match files."""

from __future__ import annotations

import argparse
import glob
import re
import shlex

from bridge.cli import build_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
COMMANDS = [m.group(1) for m in re.finditer(r"^(?:[^#\n]*&& )?(flowbridge [^#\n`]+)", README, re.M)]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_readme_flowbridge_commands_exist_with_their_options() -> None:
    assert len(COMMANDS) >= 8, COMMANDS
    subs = _subparsers()
    for line in COMMANDS:
        words = shlex.split(line.replace("[", " ").replace("]", " "))
        command = words[1]
        assert command in subs, f"README: `{line}`: no command {command!r}"
        parser = subs[command]
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:  # `flowbridge dlq list ...`: the options are the action's
            assert words[2] in nested[0].choices, f"README: `{line}`: no {command} {words[2]!r}"
            parser = nested[0].choices[words[2]]
        options = {o for a in parser._actions for o in a.option_strings}
        for word in words[2:]:
            if word.startswith("--"):
                assert word in options, f"README: `{line}`: {command} has no {word}"


def test_readme_validate_examples_name_files_that_exist() -> None:
    for line in COMMANDS:
        words = line.split()
        if words[1] != "validate":
            continue
        for pattern in words[2:]:
            if pattern.startswith("my/"):
                continue  # the walkthrough's own files, written by the snippet above it
            assert glob.glob(str(ROOT / pattern)), f"README: `{line}` matches no file"


def test_readme_mentions_flower_and_the_env_file() -> None:
    assert "celery -A tasks flower" in README
    assert "source .dev/env" in README
    assert ".venv/bin/flowbridge" not in README, "after `source .dev/env`, `flowbridge` is on PATH"
