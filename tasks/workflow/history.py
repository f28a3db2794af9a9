"""The history of a code workflow: what each activation took in and what it commanded.

One activation is one step of a workflow: the inbox items it applied, in the
order it applied them (``inputs``), and the commands the code issued while it
ran until every task waited (``commands``). Replay feeds the recorded inputs of
each activation again, in the same batches and order, and checks that the code
issues the same commands: the failure Temporal #1578 and DBOS #688 show comes
from applying results in another order on replay than live.

Everything here is plain JSON when stored (``to_json``/``from_json``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Activation",
    "Command",
    "Input",
    "args_digest",
    "input_key",
]


def args_digest(value: Any) -> str:
    """A short, stable digest of a command's arguments (a change only warns on replay)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Input:
    """One inbox item an activation applied.

    ``type``: ``start`` (``value`` is the run input), ``result`` (a durable
    call's outcome: ``seq`` and ``value`` or ``error``), ``timer`` (``seq``
    fired), ``event`` (``name``, ``value`` = payload, ``id``), ``ref`` (``id``,
    ``value`` or ``error``), ``cancel`` (``value`` = reason).
    """

    key: str
    type: str
    seq: int | None = None
    #: The generation a result or timer belongs to (a late one of an older one is ignored).
    gen: int | None = None
    name: str | None = None
    id: str | None = None
    value: Any = None
    error: Any = None

    def to_json(self) -> dict[str, Any]:
        """This input as stored."""
        out: dict[str, Any] = {"key": self.key, "type": self.type}
        for name in ("seq", "gen", "name", "id", "value", "error"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Input:
        """An input read back."""
        return cls(
            key=str(data["key"]),
            type=str(data["type"]),
            seq=data.get("seq"),
            gen=data.get("gen"),
            name=data.get("name"),
            id=data.get("id"),
            value=data.get("value"),
            error=data.get("error"),
        )


def input_key(type: str, *, seq: int | None = None, ident: str | None = None) -> str:
    """The inbox key that dedupes an input: ``r:<seq>``, ``t:<seq>``, ``e:<id>``, ``ref:<id>``..."""
    if type in ("result", "timer"):
        return f"{type[0]}:{seq}"
    if type == "start":
        return "s:start"
    if type == "cancel":
        return "x:cancel"
    return f"{'e' if type == 'event' else 'ref'}:{ident}"


@dataclass(frozen=True, kw_only=True)
class Command:
    """One thing workflow code asked for, numbered by ``seq`` within its generation.

    ``type``: ``activity``, ``timer``, ``wait`` (an event), ``ref``, ``child``,
    ``emit``, ``side_effect``, ``marker`` (``patched``), ``cancel`` (of the
    durable call ``seq``), and the ends: ``complete``, ``fail``, ``cancelled``,
    ``continue``. Replay matches ``(seq, type, name)``; ``digest`` only warns.
    """

    seq: int | None
    type: str
    name: str = ""
    digest: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> tuple[int | None, str, str]:
        """What replay compares."""
        return (self.seq, self.type, self.name)

    def describe(self) -> str:
        """``activity reserve-car (seq 3)``: how a report names it."""
        where = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.type} {self.name}{where}".replace("  ", " ")

    def to_json(self) -> dict[str, Any]:
        """This command as stored."""
        out: dict[str, Any] = {"seq": self.seq, "type": self.type, "name": self.name}
        if self.digest:
            out["digest"] = self.digest
        if self.payload:
            out["payload"] = self.payload
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Command:
        """A command read back."""
        return cls(
            seq=data.get("seq"),
            type=data["type"],
            name=data.get("name", ""),
            digest=data.get("digest", ""),
            payload=data.get("payload") or {},
        )


@dataclass(frozen=True, kw_only=True)
class Activation:
    """One committed step: its number, its time, what it applied, what it commanded."""

    n: int
    at: float
    inputs: tuple[Input, ...]
    commands: tuple[Command, ...]

    def to_json(self) -> dict[str, Any]:
        """This activation as stored."""
        return {
            "n": self.n,
            "at": self.at,
            "inputs": [i.to_json() for i in self.inputs],
            "commands": [c.to_json() for c in self.commands],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Activation:
        """An activation read back."""
        return cls(
            n=int(data["n"]),
            at=float(data["at"]),
            inputs=tuple(Input.from_json(i) for i in data["inputs"]),
            commands=tuple(Command.from_json(c) for c in data["commands"]),
        )
