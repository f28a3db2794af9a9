"""Blueprints: the model, loading from JSON/YAML, validation, graph analysis and edge conditions.

Pure Python (and PyYAML): nothing here talks to Celery, Kafka or a store.
"""

from tasks.blueprint.analysis import Analysis, Loop, analyze
from tasks.blueprint.conditions import (
    CONDITION_NAMES,
    Condition,
    Names,
    compile_condition,
    condition_scope,
)
from tasks.blueprint.loader import load_dir, load_dirs, load_file, loads
from tasks.blueprint.model import Blueprint, EdgeSpec, NodeConfig, NodeSpec
from tasks.blueprint.validate import (
    BUILTIN_USES,
    JOIN_STRATEGIES,
    ValidationIssue,
    check,
    validate,
)
from tasks.durations import format_duration, parse_duration

__all__ = [
    "BUILTIN_USES",
    "CONDITION_NAMES",
    "JOIN_STRATEGIES",
    "Analysis",
    "Blueprint",
    "Condition",
    "EdgeSpec",
    "Loop",
    "Names",
    "NodeConfig",
    "NodeSpec",
    "ValidationIssue",
    "analyze",
    "check",
    "compile_condition",
    "condition_scope",
    "format_duration",
    "load_dir",
    "load_dirs",
    "load_file",
    "loads",
    "parse_duration",
    "validate",
]
