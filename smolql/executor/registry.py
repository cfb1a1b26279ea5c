"""Executors by name, filled through the ``smolql.executors`` entry-point group (the built-in
``local`` from :mod:`smolql.executor.builtin`, as a plugin would register).

>>> "local" in executors()
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smolql.errors import ExecutionError
from smolql.registry import Registry

ENTRY_POINT_GROUP = "smolql.executors"
# Items follow :class:`smolql.executor.base.Executor` (not imported here: the settings validate
# executor names through this module, below the planner that executors run).
_REGISTRY: Registry[Any] = Registry(ENTRY_POINT_GROUP, "executor", ExecutionError)


def register_executor(executor: Any, *, replace: bool = False) -> Any:
    return _REGISTRY.register(executor, replace=replace)


def executors() -> Mapping[str, Any]:
    return _REGISTRY.all()


def get_executor(name: str) -> Any:
    return _REGISTRY.get(name)
