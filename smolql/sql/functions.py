"""SmolQL's SQL functions by name: what each takes, what it returns, and the model task it runs.

Functions register through the ``smolql.functions`` entry-point group, the built-ins
(``classify``, ``classify_topk``, ``crop``) from ``udfs/functions.py`` exactly as a plugin
would. Two kinds exist:

* a *model function* runs a model task on an image and shapes the task's output into its SQL
  value (``value``, of Arrow type ``result``); the task's output is what the executor
  computes and the cache keeps (for ``classification``: the best classes, best first), keyed
  by content, region, model, weights, plan and ``results_needed`` (top-k serves any smaller
  k);
* an *image expression* (``task`` None) selects a region of an image for a model function:
  its arguments after the image are a box ``x, y, width, height``.

>>> from smolql.sql.functions import get_function
>>> get_function("classify_topk").signature
"classify_topk(image, k [, 'model'])"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa

from smolql.errors import QueryError
from smolql.registry import Registry

ENTRY_POINT_GROUP = "smolql.functions"
TASKS = ("classification",)  # what the executors compute
KINDS = ("image", "integer", "number", "model")


@dataclass(frozen=True)
class Argument:
    name: str
    kind: str  # one of KINDS; "integer" must be a constant or a bound parameter
    optional: bool = False
    low: int | None = None
    high: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QueryError(f"argument {self.name!r}: kind must be one of {KINDS}")


@dataclass(frozen=True)
class SqlFunction:
    name: str
    arguments: tuple[Argument, ...]
    task: str | None  # the model task it runs; None: an image expression
    result: pa.DataType | None = None  # the Arrow type of its SQL value
    value: Callable[[list[dict]], object] | None = None  # task output -> SQL value
    doc: str = ""
    # The same as DuckDB SQL, from the SQL of the task output and of the model's name (a
    # string literal); with it, a cached call is answered inside DuckDB, without Python per row.
    sql_value: Callable[[str, str], str] | None = None

    def __post_init__(self) -> None:
        if not self.arguments or self.arguments[0].kind != "image":
            raise QueryError(f"function {self.name!r}: its first argument must be the image")
        if self.task is not None and self.task not in TASKS:
            raise QueryError(
                f"function {self.name!r}: task {self.task!r} is not one SmolQL runs"
                f" ({', '.join(TASKS)})"
            )
        box = tuple(a.kind for a in self.arguments[1:])
        if self.task is None and box != ("number",) * 4:
            raise QueryError(
                f"function {self.name!r}: an image expression takes the image and a box"
                " (x, y, width, height)"
            )
        if self.task is not None and (self.result is None or self.value is None):
            raise QueryError(f"function {self.name!r}: a model function needs result and value")

    @property
    def image_expression(self) -> bool:
        return self.task is None

    @property
    def signature(self) -> str:
        """E.g. ``classify(image [, 'model'])``."""
        out = ""
        for i, a in enumerate(self.arguments):
            text = f"{', ' if i else ''}{repr(a.name) if a.kind == 'model' else a.name}"
            out += f" [{text}]" if a.optional else text
        return f"{self.name}({out})"

    def results_needed(self, integers: Mapping[str, int]) -> int:
        """How many results of the task a call needs: its ``k`` argument, else 1."""
        return integers.get("k", 1)


def _lower(fn: SqlFunction) -> SqlFunction:
    if fn.name != fn.name.lower():
        raise QueryError(f"function names are lower case: {fn.name!r}")
    return fn


_REGISTRY: Registry[SqlFunction] = Registry(
    ENTRY_POINT_GROUP, "SQL function", QueryError, prepare=_lower
)


def register_function(fn: SqlFunction, *, replace: bool = False) -> SqlFunction:
    return _REGISTRY.register(fn, replace=replace)


def functions() -> Mapping[str, SqlFunction]:
    return _REGISTRY.all()


def get_function(name: str) -> SqlFunction:
    return _REGISTRY.get(name)
