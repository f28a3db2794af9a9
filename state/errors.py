"""The exception root of flowbridge.

Every error flowbridge raises on purpose derives from ``FlowbridgeError``. The
root lives in ``state`` because that package imports nothing of ours; ``tasks``
and ``bridge`` extend the tree::

    FlowbridgeError
    ├── ConfigError                    bad or missing setting (state.errors)
    ├── StateError                     the state store failed or refused (state.errors)
    │   ├── StaleFenceError            a writer holding an older fence was rejected
    │   └── SchemaError                the store's schema is missing or too new
    ├── BlueprintError                 a blueprint is invalid (tasks.errors)
    │   └── ConditionError             an edge condition does not parse (tasks.errors)
    ├── UnknownBlueprintError          no blueprint registered with that id/version (tasks.errors)
    ├── UnknownNodeError               no node registered for a ``uses`` (tasks.errors)
    ├── NodeError                      raised by node code to steer retries (tasks.errors)
    └── MessageError                   a Kafka message the bridge cannot accept (bridge.errors)
"""

from __future__ import annotations

__all__ = ["ConfigError", "FlowbridgeError", "SchemaError", "StaleFenceError", "StateError"]


class FlowbridgeError(Exception):
    """Base class of every error flowbridge raises on purpose."""


class ConfigError(FlowbridgeError):
    """A setting is missing or malformed; the message names the variable."""


class StateError(FlowbridgeError):
    """The state store failed or refused an operation."""


class StaleFenceError(StateError):
    """A writer presented a fence older than the run's current fence."""


class SchemaError(StateError):
    """The store's schema is missing or newer than this code: run ``flowbridge migrate``."""
