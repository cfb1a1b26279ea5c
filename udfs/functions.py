"""The built-in SQL functions, registered through the ``smolql.functions`` entry-point group
like any plugin's: ``classify``, ``classify_topk`` and the image expression ``crop``."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from smolql.sql.functions import Argument, SqlFunction

# One class as SQL sees it: the model's best classes carry the model that produced them.
CLASS = pa.struct(
    [
        ("label", pa.string()),
        ("score", pa.float64()),
        ("class_index", pa.int32()),
        ("model", pa.string()),
    ]
)
IMAGE = Argument("image", "image")
MODEL = Argument("model", "model", optional=True)


def _best(topk: list[dict]) -> dict:
    return topk[0]


def _all(topk: list[dict]) -> list[dict]:
    return topk


def _class_sql(item: str, model: str) -> str:
    return (
        f"struct_pack(label := {item}.label, score := {item}.score,"
        f" class_index := {item}.class_index, model := {model})"
    )


def _best_sql(topk: str, model: str) -> str:
    return f"CASE WHEN {topk} IS NOT NULL THEN {_class_sql(f'{topk}[1]', model)} END"


def _all_sql(topk: str, model: str) -> str:
    return f"list_transform({topk}, lambda c: {_class_sql('c', model)})"


BUILTINS = (
    SqlFunction(
        "classify",
        (IMAGE, MODEL),
        "classification",
        CLASS,
        _best,
        "The image's most likely class: label, score, class_index, model.",
        _best_sql,
    ),
    SqlFunction(
        "classify_topk",
        (IMAGE, Argument("k", "integer", low=1, high=1000), MODEL),
        "classification",
        pa.list_(CLASS),
        _all,
        "The k most likely classes, best first.",
        _all_sql,
    ),
    SqlFunction(
        "crop",
        (IMAGE, *(Argument(n, "number") for n in ("x", "y", "width", "height"))),
        None,
        doc="A region of the image, in displayed pixels (boxes nest).",
    ),
)


def register(register_function: Callable[[SqlFunction], SqlFunction]) -> None:
    """Entry point of the ``smolql.functions`` group."""
    for fn in BUILTINS:
        register_function(fn)
