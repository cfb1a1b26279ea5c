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


BUILTINS = (
    SqlFunction(
        "classify",
        (IMAGE, MODEL),
        "classification",
        CLASS,
        _best,
        "The image's most likely class: label, score, class_index, model.",
    ),
    SqlFunction(
        "classify_topk",
        (IMAGE, Argument("k", "integer", low=1, high=1000), MODEL),
        "classification",
        pa.list_(CLASS),
        _all,
        "The k most likely classes, best first.",
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
