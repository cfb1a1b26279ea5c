"""Calls of SmolQL's SQL functions (:mod:`smolql.sql.functions`) in a parsed statement, found
and checked here: argument counts and kinds, constant integers, model names, where a call may
stand. Running them is the executor's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from smolql.errors import QueryError
from smolql.models.registry import get_model
from smolql.sql.functions import Argument, SqlFunction, functions

BOX_ARGS = ("x", "y", "width", "height")


@dataclass(frozen=True)
class UdfCall:
    node: exp.Anonymous
    function: SqlFunction
    model: str
    k: int  # how many results of the task the call needs
    image: exp.Expression
    boxes: tuple[tuple[exp.Expression, ...], ...] = ()  # crop boxes, innermost first
    explicit: bool = False  # the model was named in the call

    @property
    def kind(self) -> str:
        """The function's name."""
        return self.function.name

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


def function_of(node: exp.Expression | None) -> SqlFunction | None:
    """The registered function ``node`` calls, if it calls one."""
    if not isinstance(node, exp.Anonymous):
        return None
    return functions().get(node.name.lower())


def is_udf(node: exp.Expression | None) -> bool:
    """A call of a model function (not an image expression)."""
    fn = function_of(node)
    return fn is not None and not fn.image_expression


def find_calls(
    tree: exp.Expression, default_model: str, values: dict | None = None
) -> list[UdfCall]:
    """Every model-function call, validated; stray image expressions and calls in places
    SmolQL cannot evaluate are errors naming the position. ``values`` are the statement's
    bound parameters (a bound integer argument is a constant)."""
    calls = []
    for node in tree.find_all(exp.Anonymous):
        fn = function_of(node)
        if fn is None:
            continue
        if fn.image_expression and function_of(node.parent) is None:
            raise error(f"{fn.name}() is an image expression: use it inside classify()", node)
        if not fn.image_expression:
            _check_place(node, fn.name)
            calls.append(_check(node, fn, default_model, values or {}))
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


def _arity(fn: SqlFunction, node: exp.Expression, given: int) -> None:
    lo = sum(not a.optional for a in fn.arguments)
    hi = len(fn.arguments)
    if not lo <= given <= hi:
        count = str(lo) if lo == hi else f"{lo} to {hi}"
        raise error(f"{fn.name}() takes {count} arguments: {fn.signature}", node)


def _check(node: exp.Anonymous, fn: SqlFunction, default_model: str, values: dict) -> UdfCall:
    args = list(node.expressions)
    _arity(fn, node, len(args))
    _no_star(fn, args)
    image = args[0]
    integers: dict[str, int] = {}
    model, explicit = default_model, False
    for arg, spec in zip(args[1:], fn.arguments[1:], strict=False):
        if spec.kind == "integer":
            integers[spec.name] = _constant_int(arg, spec, values, fn, node)
        elif spec.kind == "model":
            if not (isinstance(arg, exp.Literal) and arg.is_string):
                raise error(
                    f"{fn.name}(): the model must be a string constant, e.g. 'efficientnet_lite0'",
                    node,
                )
            model, explicit = arg.name, True
        elif spec.kind == "number":
            _check_number(arg, spec.name, fn)
    try:
        get_model(model)
    except Exception as e:
        raise error(str(e), args[-1] if explicit else node) from e
    boxes: list[tuple[exp.Expression, ...]] = []
    inner = function_of(image)
    while inner is not None and inner.image_expression:
        box_args = list(image.expressions)
        _arity(inner, image, len(box_args))
        _no_star(inner, box_args)
        for arg, arg_name in zip(box_args[1:], BOX_ARGS, strict=True):
            _check_number(arg, arg_name, inner)
        boxes.insert(0, tuple(box_args[1:]))
        image = box_args[0]
        inner = function_of(image)
    nested = next((n for n in image.find_all(exp.Anonymous) if is_udf(n)), None)
    if nested is not None:  # e.g. classify(classify(image)): a classification is no image
        raise error(
            f"{fn.name}() takes an image (a catalog's image column, or crop(image, ...)), not"
            f" the result of {function_of(nested).name}()",
            nested,
        )
    k = fn.results_needed(integers)
    return UdfCall(node, fn, model, k, image, tuple(boxes), explicit=explicit)


def _no_star(fn: SqlFunction, args: list[exp.Expression]) -> None:
    star = next((a for a in args if isinstance(a, exp.Star)), None)
    if star is not None:
        raise error(f"{fn.name}() takes named arguments, not *: {fn.signature}", star)


def _constant_int(
    arg: exp.Expression, spec: Argument, values: dict, fn: SqlFunction, node: exp.Expression
) -> int:
    value: object = None
    if isinstance(arg, exp.Placeholder) and arg.name in values:
        value = values[arg.name]
    elif isinstance(arg, exp.Literal) and not arg.is_string:
        value = arg.name
    elif isinstance(arg, exp.Neg):
        value = -1
    try:
        n = int(str(value)) if value is not None and not isinstance(value, bool) else None
    except ValueError:
        n = None
    if n is None:
        raise error(
            f"{fn.name}(): {spec.name} must be a positive integer constant or parameter", node
        )
    lo = spec.low if spec.low is not None else -(2**63)
    hi = spec.high if spec.high is not None else 2**63
    if not lo <= n <= hi:
        raise error(f"{fn.name}(): {spec.name} must be between {lo} and {hi}, not {n}", node)
    return n


def _check_number(arg: exp.Expression, arg_name: str, fn: SqlFunction) -> None:
    """Numbers (crop boxes): a string constant is an error naming the argument."""
    if isinstance(arg, exp.Literal) and arg.is_string:
        raise error(
            f"{fn.name}(): argument {arg_name} must be a number, not the string {arg.sql()}", arg
        )
