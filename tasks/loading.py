"""Loading user code at start-up: the ``FLOWBRIDGE_APP`` modules and ``FLOWBRIDGE_BLUEPRINTS``."""

from __future__ import annotations

import importlib

from tasks.blueprint import Blueprint, check
from tasks.builtins import builtin_names
from tasks.errors import AppImportError
from tasks.registry import blueprints, nodes
from tasks.settings import Settings

__all__ = ["import_app", "known_uses", "load_user_code"]

_loaded: set[tuple[str, ...]] = set()


def import_app(settings: Settings) -> None:
    """Import the ``FLOWBRIDGE_APP`` modules (they register nodes and maybe blueprints).

    Raises:
        AppImportError: a module failed to import; it names the module and the cause.
    """
    for module in settings.app_modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            # Whatever user code raises at import, start-up must stop and say where.
            raise AppImportError(module, exc) from exc


def known_uses() -> frozenset[str]:
    """Every ``uses`` a blueprint may name here: the registered nodes and the built-ins."""
    return nodes.names() | builtin_names()


def load_user_code(settings: Settings) -> list[Blueprint]:
    """Import ``FLOWBRIDGE_APP`` modules and load ``FLOWBRIDGE_BLUEPRINTS``; validate them all.

    Raises:
        AppImportError: a module failed to import.
        BlueprintError: a blueprint file is invalid, or a blueprint uses an unregistered node.
    """
    import_app(settings)
    key = (*settings.app_modules, *settings.blueprint_dirs)
    if settings.blueprint_dirs and key not in _loaded:
        blueprints.load_dirs(settings.blueprint_dirs)
    _loaded.add(key)
    known = nodes.names()
    for bp in blueprints.all():
        check(bp, known_uses=known, max_delay_s=settings.max_delay_s)
    return blueprints.all()
