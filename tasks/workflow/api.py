"""``@workflow`` and ``@activity``: registering workflow code and the tasks it calls.

Registration checks what can be checked before a run: a workflow is an
``async def wf(ctx, input)``, and its body names none of the calls that make
replay diverge (the wall clock, ``random``, ``uuid4``, the environment, I/O,
threads, ``asyncio.wait``/``as_completed``, which iterate sets). ``ctx`` has the
deterministic equivalents; activities are where side effects belong.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tasks.workflow.errors import WorkflowDefinitionError

__all__ = [
    "ActivityDef",
    "ActivityRegistry",
    "RetryPolicy",
    "WorkflowDef",
    "WorkflowRegistry",
    "activities",
    "activity",
    "workflow",
    "workflows",
]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")

#: Names a workflow body must not use, with what to use instead.
FORBIDDEN: dict[str, str] = {
    "time.time": "ctx.now()",
    "time.monotonic": "ctx.now()",
    "time.perf_counter": "ctx.now()",
    "time.sleep": "await ctx.sleep(...)",
    "datetime.now": "ctx.now()",
    "datetime.utcnow": "ctx.now()",
    "datetime.today": "ctx.now()",
    "date.today": "ctx.now()",
    "random.random": "ctx.random()",
    "random.randint": "ctx.random()",
    "random.choice": "ctx.random()",
    "random.shuffle": "ctx.random()",
    "uuid.uuid1": "ctx.uuid4()",
    "uuid.uuid4": "ctx.uuid4()",
    "os.environ": "a workflow input or an activity",
    "os.getenv": "a workflow input or an activity",
    "asyncio.wait": "ctx.all / ctx.race (asyncio.wait iterates a set)",
    "asyncio.as_completed": "ctx.race (as_completed iterates a set)",
    "asyncio.to_thread": "an activity",
    "threading.Thread": "an activity",
    "open": "an activity",
    "input": "ctx.wait_event(...)",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried: attempts in total, first delay, growth, cap."""

    max_attempts: int = 3
    initial_interval_s: float = 1.0
    backoff: float = 2.0
    max_interval_s: float = 60.0

    @classmethod
    def of(cls, value: RetryPolicy | dict[str, Any] | None) -> RetryPolicy:
        """A policy from a dict of its fields (unknown keys are an error naming them)."""
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            known = ", ".join(cls.__dataclass_fields__)
            raise WorkflowDefinitionError(
                f"unknown retry option(s) {', '.join(sorted(unknown))} (known: {known})"
            )
        return cls(**value)

    def delay_s(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1``."""
        return min(self.initial_interval_s * self.backoff ** (attempt - 1), self.max_interval_s)


@dataclass(frozen=True)
class WorkflowDef:
    """A registered workflow: its name, version and ``async def`` function."""

    name: str
    version: int
    fn: Callable[..., Any]


@dataclass(frozen=True)
class ActivityDef:
    """A registered activity: a sync or async function run as a Celery task."""

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = None


class WorkflowRegistry:
    """Workflows by name and version (the newest unless a run pinned one)."""

    def __init__(self) -> None:
        """Start empty."""
        self._defs: dict[str, dict[int, WorkflowDef]] = {}

    def register(self, defn: WorkflowDef) -> WorkflowDef:
        """Add ``defn``; the same function registered again is harmless."""
        versions = self._defs.setdefault(defn.name, {})
        existing = versions.get(defn.version)
        if existing is not None and _qualname(existing.fn) != _qualname(defn.fn):
            raise WorkflowDefinitionError(
                f"workflow {defn.name!r} version {defn.version} is registered already "
                f"({_qualname(existing.fn)}); bump the version for new code"
            )
        versions[defn.version] = defn
        return defn

    def get(self, name: str, version: int | None = None) -> WorkflowDef | None:
        """The workflow ``name`` (at ``version``, else the newest), or None."""
        versions = self._defs.get(name)
        if not versions:
            return None
        return versions.get(version) if version is not None else versions[max(versions)]

    def names(self) -> list[str]:
        """Every registered workflow name."""
        return sorted(self._defs)


class ActivityRegistry:
    """Activities by name; workers register each as a Celery task at start-up."""

    def __init__(self) -> None:
        """Start empty."""
        self._defs: dict[str, ActivityDef] = {}

    def register(self, defn: ActivityDef) -> ActivityDef:
        """Add ``defn``; the same function registered again is harmless."""
        existing = self._defs.get(defn.name)
        if existing is not None and _qualname(existing.fn) != _qualname(defn.fn):
            raise WorkflowDefinitionError(
                f"activity {defn.name!r} is registered already ({_qualname(existing.fn)})"
            )
        self._defs[defn.name] = defn
        return defn

    def get(self, name: str) -> ActivityDef | None:
        """The activity ``name``, or None (another Celery task may have that name)."""
        return self._defs.get(name)

    def all(self) -> list[ActivityDef]:
        """Every registered activity."""
        return list(self._defs.values())


#: The process-wide registries ``@workflow`` and ``@activity`` fill.
workflows = WorkflowRegistry()
activities = ActivityRegistry()


def workflow(name: str, *, version: int = 1) -> Callable[[F], F]:
    """Register ``async def fn(ctx, input)`` as workflow ``name`` (runs pin their version)."""
    _check_name("workflow", name)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise WorkflowDefinitionError(f"workflow {name!r}: version must be a positive integer")

    def decorate(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise WorkflowDefinitionError(
                f"workflow {name!r}: {_qualname(fn)} must be an `async def` function"
            )
        if len(inspect.signature(fn).parameters) != 2:
            raise WorkflowDefinitionError(
                f"workflow {name!r}: {_qualname(fn)} must take (ctx, input)"
            )
        problems = lint(fn)
        if problems:
            raise WorkflowDefinitionError(
                f"workflow {name!r} ({_qualname(fn)}) uses what replay cannot repeat:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        workflows.register(WorkflowDef(name, version, fn))
        fn.name = name  # type: ignore[attr-defined]  # ctx.child(fn, ...) finds the name
        return fn

    return decorate


def activity(
    name: str,
    *,
    retry: RetryPolicy | dict[str, Any] | None = None,
    timeout: float | None = None,
) -> Callable[[F], F]:
    """Register a sync or async function as activity ``name`` (a Celery task in workers)."""
    _check_name("activity", name)
    policy = RetryPolicy.of(retry)

    def decorate(fn: F) -> F:
        activities.register(ActivityDef(name, fn, policy, timeout))
        fn.__flowbridge_activity__ = name  # type: ignore[attr-defined]
        return fn

    return decorate


def lint(fn: Callable[..., Any]) -> list[str]:
    """The forbidden names ``fn``'s own source uses, with their line and the replacement."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        first_line = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return []  # no source (a REPL, a C function): replay still checks commands
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        dotted = _dotted(node)
        if dotted is None:
            continue
        for bad, instead in FORBIDDEN.items():
            if dotted == bad or dotted.endswith("." + bad):
                line = first_line + getattr(node, "lineno", 1) - 1
                problems.append(f"line {line}: {dotted} (use {instead})")
    return sorted(set(problems))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        return node.id if node.id in ("open", "input") else None
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and parts:
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise WorkflowDefinitionError(f"{kind} name {name!r} must match {_NAME.pattern}")


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
