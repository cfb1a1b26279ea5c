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


BOX_ARGS = ("x", "y", "width", "height")


@dataclass(frozen=True)
class UdfCall:
    node: exp.Anonymous
    kind: str
    model: str
    k: int
    image: exp.Expression
    boxes: tuple[tuple[exp.Expression, ...], ...] = ()  # crop boxes, innermost first
    explicit: bool = False  # the model was named in the call

    @property
    def roi(self) -> tuple[exp.Expression, ...] | None:
        """Every crop argument, innermost box first (None without crop)."""
        return tuple(a for box in self.boxes for a in box) or None

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


def is_udf(node: exp.Expression | None, names=MODEL_UDFS) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() in names


def find_calls(
    tree: exp.Expression, default_model: str, values: dict | None = None
) -> list[UdfCall]:
    """Every classify/classify_topk call, validated; stray crop() calls and calls in places
    SmolQL cannot evaluate are errors naming the position. ``values`` are the statement's
    bound parameters (a bound ``k`` is a constant)."""
    calls = []
    for node in tree.find_all(exp.Anonymous):
        name = node.name.lower()
        if name == "crop" and not (is_udf(node.parent) or is_udf(node.parent, ("crop",))):
            raise error("crop() is an image expression: use it inside classify()", node)
        if name in MODEL_UDFS:
            _check_place(node, name)
            calls.append(_check(node, name, default_model, values or {}))
    return calls


def _check_place(node: exp.Anonymous, name: str) -> None:
    """Reject calls where the planner cannot give them their own stage."""
    join = node.find_ancestor(exp.Join)
    if join is not None and _inside(node, join.args.get("on")):
        raise error(
            f"{name}() in a JOIN ... ON condition is not supported: join on plain columns and"
            f" put the {name}() condition in WHERE",
            node,
        )
    if node.find_ancestor(exp.Lambda) is not None:
        raise error(f"{name}() inside a lambda is not supported", node)
    select = node.find_ancestor(exp.Select)
    if select is None:
        return
    sources = _sources(select)
    outer = (
        sorted({c.table for c in node.expressions[0].find_all(exp.Column) if c.table} - sources)
        if node.expressions
        else []
    )
    if outer or node.find_ancestor(exp.Lateral) is not None:
        what = f"the outer query's {outer[0]!r}" if outer else "an outer query"
        raise error(
            f"{name}() in a correlated subquery or LATERAL join (its image comes from {what})"
            f" is not supported: call {name}() in the outer query",
            node,
        )


def _inside(node: exp.Expression, ancestor: exp.Expression | None) -> bool:
    while ancestor is not None and node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _sources(select: exp.Select) -> set[str]:
    """The names a SELECT's own FROM and JOINs bring into scope."""
    names: set[str] = set()
    from_ = select.args.get("from_")
    items = [from_.this] if from_ is not None else []
    items += [j.this for j in select.args.get("joins") or []]
    for item in items:
        if isinstance(item, exp.Table):
            names.add(item.name)
        if item.alias:
            names.add(item.alias)
    return names


def _check(node: exp.Anonymous, name: str, default_model: str, values: dict) -> UdfCall:
    args = list(node.expressions)
    lo, hi = (1, 2) if name == "classify" else (2, 3)
    if not lo <= len(args) <= hi:
        raise error(f"{name}() takes {lo} to {hi} arguments: {SIGNATURES[name]}", node)
    image, rest = args[0], args[1:]
    k = 1
    if name == "classify_topk":
        k_arg, rest = rest[0], rest[1:]
        k = _constant_k(k_arg, values, node)
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
        raise error(str(e), rest[0] if rest else node) from e
    boxes: list[tuple[exp.Expression, ...]] = []
    while is_udf(image, ("crop",)):
        crop_args = list(image.expressions)
        if len(crop_args) != 5:
            raise error(f"crop() takes 5 arguments: {SIGNATURES['crop']}", image)
        for arg, arg_name in zip(crop_args[1:], BOX_ARGS, strict=True):
            _check_number(arg, arg_name, image)
        boxes.insert(0, tuple(crop_args[1:]))
        image = crop_args[0]
    return UdfCall(node, name, model, k, image, tuple(boxes), explicit=bool(rest))


def _constant_k(k_arg: exp.Expression, values: dict, node: exp.Expression) -> int:
    value: object = None
    if isinstance(k_arg, exp.Placeholder) and k_arg.name in values:
        value = values[k_arg.name]
    elif isinstance(k_arg, exp.Literal) and not k_arg.is_string:
        value = k_arg.name
    elif isinstance(k_arg, exp.Neg):
        value = -1
    try:
        k = int(str(value)) if value is not None and not isinstance(value, bool) else None
    except ValueError:
        k = None
    if k is None:
        raise error("classify_topk(): k must be a positive integer constant or parameter", node)
    if not 1 <= k <= 1000:
        raise error(f"classify_topk(): k must be between 1 and 1000, not {k}", node)
    return k


def _check_number(arg: exp.Expression, arg_name: str, crop: exp.Expression) -> None:
    """Crop boxes are numbers: a string constant is an error naming the argument."""
    if isinstance(arg, exp.Literal) and arg.is_string:
        raise error(
            f"crop(): argument {arg_name} must be a number, not the string {arg.sql()}", arg
        )
