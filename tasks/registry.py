"""Where node implementations and blueprints are registered, by name."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from tasks.blueprint import Blueprint
from tasks.blueprint.loader import load_dirs
from tasks.errors import BlueprintError, UnknownBlueprintError, UnknownNodeError

__all__ = [
    "BlueprintRegistry",
    "NodeRegistry",
    "blueprints",
    "node",
    "nodes",
    "register_blueprint",
]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


class NodeRegistry:
    """Node implementations by ``uses`` name; messages can only name what is registered here."""

    def __init__(self) -> None:
        """Start empty."""
        self._fns: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` under ``name``; registering the same function twice is harmless."""
        if not _NAME.match(name):
            raise ValueError(f"node name {name!r} must match {_NAME.pattern}")
        existing = self._fns.get(name)
        if existing is not None and existing is not fn and _qualname(existing) != _qualname(fn):
            raise ValueError(
                f"node {name!r} is already registered to {_qualname(existing)}; "
                f"cannot register {_qualname(fn)} too"
            )
        self._fns[name] = fn

    def get(self, name: str) -> Callable[..., Any]:
        """The implementation registered as ``name``."""
        try:
            return self._fns[name]
        except KeyError:
            raise UnknownNodeError(name, sorted(self._fns)) from None

    def names(self) -> frozenset[str]:
        """Every registered name."""
        return frozenset(self._fns)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered (without copying the names, as ``names`` does)."""
        return name in self._fns


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), version)


class BlueprintRegistry:
    """Blueprints by id and version; ``get(id)`` without a version gives the newest."""

    def __init__(self) -> None:
        """Start empty."""
        self._bps: dict[str, dict[str, Blueprint]] = {}

    def register(self, bp: Blueprint) -> Blueprint:
        """Register ``bp``; re-registering an identical blueprint is harmless."""
        versions = self._bps.setdefault(bp.id, {})
        existing = versions.get(bp.version)
        if existing is not None and existing != bp:
            raise BlueprintError(
                f"blueprint {bp.id!r} version {bp.version} is registered twice with different "
                "contents: bump metadata.version when you change a blueprint"
            )
        versions[bp.version] = bp
        return bp

    def get(self, blueprint_id: str, version: str | None = None) -> Blueprint:
        """The blueprint ``blueprint_id`` at ``version`` (newest when None)."""
        versions = self._bps.get(blueprint_id)
        if versions:
            if version is None:
                return versions[max(versions, key=_version_key)]
            if str(version) in versions:
                return versions[str(version)]
        known = [f"{i}@{v}" for i in sorted(self._bps) for v in sorted(self._bps[i])]
        raise UnknownBlueprintError(blueprint_id, version, known)

    def all(self) -> list[Blueprint]:
        """Every registered blueprint version."""
        return [bp for versions in self._bps.values() for bp in versions.values()]

    def load_dirs(self, directories: Iterable[str | Path]) -> list[Blueprint]:
        """Load and register every blueprint file of ``directories`` (all problems at once)."""
        return [self.register(bp) for bp in load_dirs(directories)]

    def replace(self, bp: Blueprint) -> Blueprint | None:
        """Register ``bp`` over any blueprint of the same id and version; returns the old one."""
        versions = self._bps.setdefault(bp.id, {})
        old = versions.get(bp.version)
        versions[bp.version] = bp
        return old

    def remove(self, blueprint_id: str, version: str) -> Blueprint | None:
        """Forget one blueprint version (runs keep their snapshots); returns it if it was there."""
        versions = self._bps.get(blueprint_id, {})
        old = versions.pop(version, None)
        if not versions:
            self._bps.pop(blueprint_id, None)
        return old

    def find(self, blueprint_id: str, version: str) -> Blueprint | None:
        """The blueprint of exactly this id and version, or None."""
        return self._bps.get(blueprint_id, {}).get(version)


#: The process-wide registries that ``@node`` and ``register_blueprint`` fill.
nodes = NodeRegistry()
blueprints = BlueprintRegistry()


def node(name: str) -> Callable[[F], F]:
    """Register a sync or ``async`` function ``fn(ctx)`` as the node implementation ``name``."""
    if callable(name):  # pragma: no cover - guards the common slip of a bare @node
        raise TypeError('use @node("name"): the node needs the name blueprints refer to')

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        if len(params) != 1:
            raise TypeError(f"node {name!r}: {_qualname(fn)} must take exactly one argument, ctx")
        nodes.register(name, fn)
        return fn

    return decorate


def register_blueprint(bp: Blueprint | dict[str, Any]) -> Blueprint:
    """Register a blueprint built in Python (a ``Blueprint`` or flowcraft's JSON as a dict)."""
    return blueprints.register(bp if isinstance(bp, Blueprint) else Blueprint.from_dict(bp))
