"""SmolQL's SQL functions: ``classify``, ``classify_topk`` and the image expression ``crop``.

Calls are found in a parsed statement and checked here (argument counts and types, model
names); running them is the executor's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from smolql.errors import QueryError
from smolql.models.registry import get_model

MODEL_UDFS = ("classify", "classify_topk")
SIGNATURES = {
    "classify": "classify(image [, 'model'])",
    "classify_topk": "classify_topk(image, k [, 'model'])",
    "crop": "crop(image, x, y, width, height)",
}


@dataclass(frozen=True)
class UdfCall:
    node: exp.Anonymous
    kind: str
    model: str
    k: int
    image: exp.Expression
    roi: tuple[exp.Expression, ...] | None
    explicit: bool = False  # the model was named in the call

    @property
    def key(self) -> tuple:
        roi = tuple(a.sql("duckdb") for a in self.roi) if self.roi else None
        return (self.kind, self.model, self.k, self.image.sql("duckdb"), roi)


def position(node: exp.Expression) -> tuple[int | None, int | None]:
    for n in node.walk():
        meta = getattr(n, "_meta", None) or {}
        if "line" in meta:
            return meta["line"], meta.get("col")
    return None, None


def error(message: str, node: exp.Expression) -> QueryError:
    line, col = position(node)
    return QueryError(message, line=line, column=col)


def is_udf(node: exp.Expression, names=MODEL_UDFS) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() in names


def find_calls(tree: exp.Expression, default_model: str) -> list[UdfCall]:
    """Every classify/classify_topk call, validated; stray crop() calls are errors."""
    calls = []
    for node in tree.find_all(exp.Anonymous):
        name = node.name.lower()
        if name == "crop" and not is_udf(node.parent):
            raise error("crop() is an image expression: use it inside classify()", node)
        if name in MODEL_UDFS:
            calls.append(_check(node, name, default_model))
    return calls


def _check(node: exp.Anonymous, name: str, default_model: str) -> UdfCall:
    args = list(node.expressions)
    lo, hi = (1, 2) if name == "classify" else (2, 3)
    if not lo <= len(args) <= hi:
        raise error(f"{name}() takes {lo} to {hi} arguments: {SIGNATURES[name]}", node)
    image, rest = args[0], args[1:]
    k = 1
    if name == "classify_topk":
        k_arg, rest = rest[0], rest[1:]
        if not (isinstance(k_arg, exp.Literal) and not k_arg.is_string and k_arg.name.isdigit()):
            raise error("classify_topk(): k must be a positive integer constant", node)
        k = int(k_arg.name)
        if not 1 <= k <= 1000:
            raise error("classify_topk(): k must be between 1 and 1000", node)
    model = default_model
    if rest:
        if not (isinstance(rest[0], exp.Literal) and rest[0].is_string):
            raise error(
                f"{name}(): the model must be a string constant, e.g. 'efficientnet_lite0'", node
            )
        model = rest[0].name
    try:
        get_model(model)
    except Exception as e:
        raise error(str(e), node) from e
    roi = None
    if is_udf(image, ("crop",)):
        crop_args = list(image.expressions)
        if len(crop_args) != 5:
            raise error(f"crop() takes 5 arguments: {SIGNATURES['crop']}", image)
        image, roi = crop_args[0], tuple(crop_args[1:])
    return UdfCall(node, name, model, k, image, roi, explicit=bool(rest))
