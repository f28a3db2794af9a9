"""Loading blueprints from JSON and YAML files (``FLOWBRIDGE_BLUEPRINTS``).

Files are parsed with ``json`` or ``yaml.safe_load`` (never a YAML loader that
builds objects), then with ``Blueprint.from_dict``, and by default checked
with ``check`` so graph errors surface at load time, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.blueprint.model import Blueprint
from tasks.blueprint.validate import ValidationIssue, check, validate
from tasks.errors import BlueprintError

__all__ = [
    "BLUEPRINT_SUFFIXES",
    "blueprint_files",
    "file_problems",
    "load_dir",
    "load_dirs",
    "load_file",
    "loads",
]

#: File suffixes (lower-case) treated as blueprints; anything else in a directory is skipped.
BLUEPRINT_SUFFIXES = (".json", ".yaml", ".yml")


def loads(
    text: str,
    *,
    format: Literal["json", "yaml"] = "json",
    source: str = "<string>",
    validate: bool = True,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> Blueprint:
    """Parse one blueprint from JSON or YAML text; ``source`` names it in errors.

    Raises:
        BlueprintError: the text does not parse, or the blueprint is invalid.
    """
    try:
        data: Any = json.loads(text) if format == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise BlueprintError(f"{source}: not valid {format.upper()}: {exc}") from None
    except RecursionError:
        raise BlueprintError(f"{source}: not valid {format.upper()}: nested too deeply") from None
    try:
        bp = Blueprint.from_dict(data)
        if validate:
            check(bp, known_uses=known_uses, max_delay_s=max_delay_s)
    except BlueprintError as exc:
        raise BlueprintError(f"{source}: {exc.message}", exc.issues) from None
    return bp


#: Checks of a node's own config, which parsing has already reported for a node it flagged.
_NODE_OWN_CODES = frozenset({"bad-config", "bad-join", "bad-quorum"})


def file_problems(
    path: str | Path,
    *,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> tuple[Blueprint | None, list[str]]:
    """Every problem of one blueprint file, structural and graph alike (``flowbridge validate``).

    Returns the blueprint (None if the file does not parse) and the problems, without the
    path; a blueprint with problems holds only what parsed and is not for running.
    """
    p = Path(path)
    try:
        text = _read(p)
        data: Any = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except BlueprintError as exc:
        return None, [exc.message.removeprefix(f"{p}: ")]
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
        return None, [f"not valid {kind}: {exc}"]
    except RecursionError:
        # The parsers recurse per level: a file nested thousands deep is not a blueprint.
        kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
        return None, [f"not valid {kind}: nested too deeply"]
    bp, issues = Blueprint.parse(data)
    if bp is None:
        return None, [i.message for i in issues]
    flagged = {i.node for i in issues if i.node is not None}
    # A node whose uses did not parse has uses "": parsing said so already.
    no_uses = {n.id for n in bp.nodes if not n.uses}
    more: list[ValidationIssue] = [
        i
        for i in validate(bp, known_uses=known_uses, max_delay_s=max_delay_s)
        if not (i.node in flagged and i.code in _NODE_OWN_CODES)
        and not (i.code == "unknown-uses" and i.node in no_uses)
    ]
    return bp, list(dict.fromkeys(i.message for i in (*issues, *more)))


def _read(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix not in BLUEPRINT_SUFFIXES:
        raise BlueprintError(
            f"{p}: unknown blueprint file type {suffix!r} (use {', '.join(BLUEPRINT_SUFFIXES)})"
        )
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BlueprintError(f"{p}: cannot read blueprint file: {exc}") from None


def load_file(
    path: str | Path,
    *,
    validate: bool = True,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> Blueprint:
    """Load one ``.json``, ``.yaml`` or ``.yml`` blueprint file.

    Raises:
        BlueprintError: the file is unreadable, does not parse, or the blueprint is invalid.
    """
    p = Path(path)
    text = _read(p)
    return loads(
        text,
        format="json" if p.suffix.lower() == ".json" else "yaml",
        source=str(p),
        validate=validate,
        known_uses=known_uses,
        max_delay_s=max_delay_s,
    )


def load_dir(
    directory: str | Path,
    *,
    validate: bool = True,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> list[Blueprint]:
    """Load every blueprint file in ``directory`` (not recursive), sorted by file name.

    Raises:
        BlueprintError: the directory is missing, any file is invalid (all are reported),
            or two files define the same id and version.
    """
    return load_dirs([directory], validate=validate, known_uses=known_uses, max_delay_s=max_delay_s)


def load_dirs(
    directories: Iterable[str | Path],
    *,
    validate: bool = True,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> list[Blueprint]:
    """Load the blueprint files of several directories (``FLOWBRIDGE_BLUEPRINTS``), in order.

    Raises:
        BlueprintError: a directory is missing, any file is invalid (all are reported),
            or two files, in one directory or in two, define the same id and version.
    """
    roots = [Path(d) for d in directories]
    for root in roots:
        if not root.is_dir():
            raise BlueprintError(
                f"{root}: blueprint directory does not exist or is not a directory"
            )
    loaded: list[Blueprint] = []
    origin: dict[tuple[str, str], Path] = {}
    failures: list[str] = []
    for p in (p for root in roots for p in blueprint_files(root)):
        try:
            bp = load_file(p, validate=validate, known_uses=known_uses, max_delay_s=max_delay_s)
        except BlueprintError as exc:
            failures.append(str(exc))
            continue
        key = (bp.id, bp.version)
        if key in origin:
            failures.append(
                f"{p}: blueprint {bp.id!r} version {bp.version} is also defined in {origin[key]}"
            )
            continue
        origin[key] = p
        loaded.append(bp)
    if failures:
        details = "\n".join(failures)
        where = ", ".join(str(r) for r in roots)
        raise BlueprintError(
            f"{len(failures)} blueprint file(s) in {where} are invalid:\n{details}"
        )
    return loaded


def blueprint_files(directory: Path) -> list[Path]:
    """The blueprint files of one directory (by suffix, not recursive), sorted by name."""
    return [
        p
        for p in sorted(directory.iterdir())
        if p.suffix.lower() in BLUEPRINT_SUFFIXES and p.is_file()
    ]
