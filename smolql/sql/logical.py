"""Turn a statement with UDF calls into stages and a final DuckDB query.

Each distinct UDF call becomes a *stage*: a driver query (the relational pre-filter: the
call's FROM and JOINs with every WHERE conjunct that needs no unevaluated UDF) selects the
images to evaluate; the call is then replaced everywhere by a lookup into the stage's results,
keyed by the image value's path and hash (and the crop arguments); the executor fills each
key with the result for the content at that path now. Where the call sits in the select that
drives its stage (its select list, WHERE, ORDER BY or QUALIFY, with no grouping and no bare
``*`` to widen) the lookup is a LEFT JOIN of that select to the results, whose keys are
unique, so no row is added or lost; elsewhere it is a scalar subquery, which DuckDB
decorrelates into the same join at some extra cost. Stages run cheapest model first, and a
later stage's driver already filters on the earlier stages' results, so an expensive model
only sees the rows a cheap one let through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

from smolql.sql.calls import UdfCall, find_calls, function_of, is_udf

IMAGE = "__img"


def roi_names(n: int) -> list[str]:
    """Driver columns of a call's crop arguments (four per box)."""
    return [f"__roi{i}" for i in range(n)]


@dataclass
class Stage:
    index: int
    call: UdfCall
    nodes: list[exp.Anonymous]
    driver: exp.Select | None = None
    tag: str = ""  # sets apart the tables of statements kept planned side by side

    @property
    def table(self) -> str:
        return f"__smolql_r{self.tag}{self.index}"


@dataclass
class QueryPlan:
    tree: exp.Expression
    stages: list[Stage] = field(default_factory=list)
    early_limit: int | None = None
    root_image: exp.Expression | None = None
    params: dict = field(default_factory=dict)

    def final_sql(self) -> str:
        return self.tree.sql("duckdb")


def plan_query(
    tree: exp.Expression,
    default_model: str,
    cost: Callable[[str], float],
    values: dict | None = None,
    tag: str = "",
) -> QueryPlan:
    """Build stages (cheapest computable first, numbered in that order) and rewrite ``tree``
    in place; ``values`` are the bound parameters; ``tag`` goes into the stage tables'
    names."""
    _name_projections(tree)
    calls = find_calls(tree, default_model, values)
    early_limit, root_image = _early_limit(tree, calls)
    groups: dict[tuple, Stage] = {}
    for call in calls:
        stage = groups.setdefault(call.key, Stage(len(groups) + 1, call, [], tag=tag))
        stage.nodes.append(call.node)
    pending = list(groups.values())
    ordered: list[Stage] = []
    while pending:
        ready = [s for s in pending if not _has_udf(_driver(tree, s))]
        # Predicates first (cheapest model first), so that UDFs in the select list only see
        # the rows that pass them.
        stage = min(ready or pending, key=lambda s: (not _in_where(s), cost(s.call.model), s.index))
        stage.index = len(ordered) + 1  # numbered in the order they run
        stage.driver = _driver(tree, stage)
        home = stage.nodes[0].find_ancestor(exp.Select)
        for node in stage.nodes:
            # LIMIT rounds gather results round by round, where two image values of one file
            # (two catalogs of a folder) may land in different rounds: a subquery then
            joined = (
                early_limit is None
                and node.find_ancestor(exp.Select) is home
                and _joinable(node, home, stage)
            )
            node.replace(_joined(stage, home) if joined else _lookup(stage))
        pending.remove(stage)
        ordered.append(stage)
    return QueryPlan(tree, ordered, early_limit, root_image)


def _in_where(stage: Stage) -> bool:
    return any(n.find_ancestor(exp.Where) is not None for n in stage.nodes)


def _name_projections(tree: exp.Expression) -> None:
    """Keep DuckDB's column names for unaliased UDF projections (``classify(image).label``)."""
    for select in list(tree.find_all(exp.Select)):
        for proj in list(select.expressions):
            if isinstance(proj, exp.Alias) or not _has_udf(proj):
                continue
            shown = proj.copy()
            for call in shown.find_all(exp.Anonymous):
                if function_of(call) is not None:
                    call.set("this", call.name.lower())
            name = shown.sql("duckdb", normalize_functions=False)
            alias = exp.Alias(alias=exp.to_identifier(name, quoted=True))
            proj.replace(alias)
            alias.set("this", proj)


def _has_udf(node: exp.Expression | None) -> bool:
    return node is not None and any(is_udf(n) for n in node.find_all(exp.Anonymous))


def _conjuncts(where: exp.Expression | None) -> list[exp.Expression]:
    if where is None:
        return []
    return list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]


def _driver(tree: exp.Expression, stage: Stage) -> exp.Select:
    """SELECT DISTINCT image [, roi] FROM <the call's FROM/JOINs> WHERE <UDF-free conjuncts>."""
    node = stage.nodes[0]
    select = node.find_ancestor(exp.Select)
    call = stage.call
    projections = [exp.alias_(call.image.copy(), IMAGE)]
    if call.roi:
        names = roi_names(len(call.roi))
        projections += [exp.alias_(a.copy(), n) for a, n in zip(call.roi, names, strict=True)]
    driver = exp.Select(expressions=projections, distinct=exp.Distinct())
    if select.args.get("from_"):
        driver.set("from_", select.args["from_"].copy())
    if select.args.get("joins"):
        driver.set("joins", [j.copy() for j in select.args["joins"]])
    keep = [c.copy() for c in _conjuncts(select.args.get("where")) if not _has_udf(c)]
    if keep:
        driver = driver.where(*keep, copy=False)
    with_ = tree.args.get("with_")
    if with_ is not None and select is not tree:
        driver.set("with_", with_.copy())
    elif select.args.get("with_") is not None:
        driver.set("with_", select.args["with_"].copy())
    return driver


JOINABLE = ("expressions", "where", "order", "qualify")  # clauses that may read a joined table


def _joinable(node: exp.Expression, select: exp.Select, stage: Stage) -> bool:
    """Whether ``node`` may read a LEFT JOIN of ``select``: the select has a FROM; the call
    sits in a clause evaluated per joined row (WHERE, or with no grouping the select list,
    ORDER BY, QUALIFY); no bare ``*`` would show the joined columns; and its arguments hold
    no subquery."""
    if select.args.get("from_") is None:
        return False
    clause = node
    while clause.parent is not select:
        clause = clause.parent
    if clause.arg_key not in JOINABLE:
        return False
    grouped = select.args.get("group") or select.args.get("having") or _aggregates(select)
    if grouped and clause.arg_key != "where":
        return False
    if any(_bare_star(p) for p in select.expressions):
        return False
    arguments = [stage.call.image, *(stage.call.roi or ())]
    return not any(a.find(exp.Subquery, exp.Select) for a in arguments)


def _aggregates(select: exp.Select) -> bool:
    return any(
        a.find_ancestor(exp.Select) is select
        for p in select.expressions
        for a in p.find_all(exp.AggFunc)
    )


def _bare_star(projection: exp.Expression) -> bool:
    if isinstance(projection, exp.Star):
        return True
    return isinstance(projection, exp.Column) and projection.is_star and not projection.table


def _joined(stage: Stage, select: exp.Select) -> exp.Column:
    """``<alias>.__v``, joining ``select`` to the stage's results once (``LEFT JOIN <results>
    AS <alias> ON <alias>.__path = (image).path AND ... [AND crop arguments match]``)."""
    alias = f"__smolql_l{stage.index}"
    if not any(j.alias_or_name == alias for j in select.args.get("joins") or []):
        table = exp.Table(
            this=exp.to_identifier(stage.table), alias=exp.TableAlias(this=exp.to_identifier(alias))
        )
        select.join(table, on=_matches(stage, alias), join_type="LEFT", copy=False)
    return exp.column("__v", alias)


def _matches(stage: Stage, alias: str) -> exp.Expression:
    """The results' key equals the call's: path and hash of the image value, crop arguments."""
    call = stage.call
    cond: exp.Expression | None = None
    for field_name in ("path", "hash"):
        eq = exp.EQ(
            this=exp.column(f"__{field_name}", alias),
            expression=exp.Dot(
                this=exp.Paren(this=call.image.copy()), expression=exp.to_identifier(field_name)
            ),
        )
        cond = eq if cond is None else exp.And(this=cond, expression=eq)
    names = roi_names(len(call.roi or ()))
    for arg, name in zip(call.roi or (), names, strict=True):
        cond = exp.And(
            this=cond, expression=exp.EQ(this=exp.column(name, alias), expression=arg.copy())
        )
    return cond


def _lookup(stage: Stage) -> exp.Subquery:
    """``(SELECT __v FROM <results> WHERE __path = (image).path AND __hash = (image).hash
    [AND crop arguments match])``."""
    query = (
        exp.select(exp.column("__v", "__r"))
        .from_(
            exp.Table(
                this=exp.to_identifier(stage.table),
                alias=exp.TableAlias(this=exp.to_identifier("__r")),
            )
        )
        .where(_matches(stage, "__r"))
    )
    return exp.Subquery(this=query)


def _early_limit(tree: exp.Expression, calls: list[UdfCall]):
    """LIMIT n with no ORDER BY, grouping or joins over one table: inference can stop early."""
    if not isinstance(tree, exp.Select) or tree.args.get("with_") is not None:
        return None, None
    limit = tree.args.get("limit")
    count = limit.expression if limit is not None else None
    if not isinstance(count, exp.Literal) or not count.is_int:
        return None, None  # LIMIT 'x', 2.5, ...: DuckDB says what is wrong with it
    blocked = ("order", "group", "having", "distinct", "joins", "qualify")
    if any(tree.args.get(a) for a in blocked) or tree.find(exp.AggFunc) or tree.find(exp.Window):
        return None, None
    if any(s is not tree for s in tree.find_all(exp.Select)):
        return None, None  # subqueries: keep it simple and exact
    if len({c.image.sql() for c in calls}) != 1:
        return None, None
    return int(count.name), calls[0].image.copy()
