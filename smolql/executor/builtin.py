"""The built-in executors (``local``, and ``ray``: importable without Ray, which it asks for
when it runs), registered through the ``smolql.executors`` entry-point group
like any plugin's."""

from __future__ import annotations

from collections.abc import Callable

from smolql.executor.base import Executor
from smolql.executor.cluster import RayExecutor
from smolql.executor.local import LocalExecutor


def register(register_executor: Callable[[Executor], Executor]) -> None:
    """Entry point of the ``smolql.executors`` group."""
    register_executor(LocalExecutor())
    register_executor(RayExecutor())
