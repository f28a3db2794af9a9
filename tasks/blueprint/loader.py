"""Loading blueprints from JSON and YAML files (``FLOWBRIDGE_BLUEPRINTS``).

Files are parsed with ``json`` or ``yaml.safe_load`` (never a YAML loader that
builds objects), then with ``Blueprint.from_dict``, and by default checked
with ``check`` so graph errors surface at load time, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.blueprint.model import Blueprint
from tasks.blueprint.validate import check
from tasks.errors import BlueprintError

__all__ = ["BLUEPRINT_SUFFIXES", "load_dir", "load_file", "loads"]

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
    try:
        bp = Blueprint.from_dict(data)
        if validate:
            check(bp, known_uses=known_uses, max_delay_s=max_delay_s)
    except BlueprintError as exc:
        raise BlueprintError(f"{source}: {exc.message}", exc.issues) from None
    return bp


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
    suffix = p.suffix.lower()
    if suffix not in BLUEPRINT_SUFFIXES:
        raise BlueprintError(
            f"{p}: unknown blueprint file type {suffix!r} (use {', '.join(BLUEPRINT_SUFFIXES)})"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BlueprintError(f"{p}: cannot read blueprint file: {exc}") from None
    return loads(
        text,
        format="json" if suffix == ".json" else "yaml",
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
    root = Path(directory)
    if not root.is_dir():
        raise BlueprintError(f"{root}: blueprint directory does not exist or is not a directory")
    loaded: list[Blueprint] = []
    origin: dict[tuple[str, str], Path] = {}
    failures: list[str] = []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() not in BLUEPRINT_SUFFIXES or not p.is_file():
            continue
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
        raise BlueprintError(f"{len(failures)} blueprint file(s) in {root} are invalid:\n{details}")
    return loaded
