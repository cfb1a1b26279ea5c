"""Run SQL: plain DuckDB statements untouched; statements with SmolQL UDFs as planned stages
(pre-filter in DuckDB -> cached or fresh inference -> final query in DuckDB); SET/RESET of
SmolQL settings; EXPLAIN [ANALYZE] of UDF queries."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from smolql.backends.cpu import machine_id
from smolql.config import SETTINGS, Settings
from smolql.errors import QueryError, SmolQLError
from smolql.executor import cached as in_duckdb
from smolql.executor.base import where
from smolql.executor.calibrate import ensure_engine
from smolql.executor.registry import get_executor
from smolql.executor.stage import DONE_TABLE, ImageWarning, StageStats, driver_rows, run_stage
from smolql.freshness import resolve
from smolql.ingest.manage import names as catalog_names
from smolql.models.registry import get_model
from smolql.planner import targets as plan_choice
from smolql.planner.cost import CostModel
from smolql.planner.engines import stored_choice
from smolql.planner.physical import StagePlan, plan_stage
from smolql.planner.rates import Header
from smolql.planner.space import ORIGINAL
from smolql.sql.logical import IMAGE, QueryPlan, Stage, plan_query
from smolql.sql.parse import classify_statement, parse_one, split, uses_smolql
from smolql.sql.run import bound, clear_name, query_arrow, sql_error
from smolql.storage import cache
from smolql.storage.profiles import cost_model as profile_cost_model
from smolql.storage.schema import image_headers


class PlanWarning(UserWarning):
    """An accuracy or throughput target could not be used as asked (e.g. no profile yet)."""


@dataclass
class QueryStats:
    stages: dict[int, StageStats] = field(default_factory=dict)
    final_rows: int = 0
    final_seconds: float = 0.0


def run_script(
    con: duckdb.DuckDBPyConnection, settings: Settings, sql: str, params=None
) -> pa.Table:
    """Run one or more statements; return the last one's result as Arrow."""
    with _boundary(con):
        if not uses_smolql(sql):
            return query_arrow(con, *_duckdb_params(sql, params))  # exactly DuckDB
        result = pa.table({})
        for text in split(sql):
            result = run_statement(con, settings, text, params)
        return result


def stream_script(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    sql: str,
    params=None,
    batch_size: int = 8192,
) -> pa.RecordBatchReader:
    """Like :func:`run_script`, but the last statement's rows arrive as a stream of Arrow
    record batches (the UDF stages run first; DuckDB then streams the final query)."""
    with _boundary(con):
        return _stream(con, settings, sql, params, batch_size)


def _stream(con, settings: Settings, sql: str, params, batch_size: int) -> pa.RecordBatchReader:
    texts = split(sql) if uses_smolql(sql) else [sql]
    for text in texts[:-1]:
        run_statement(con, settings, text, params)
    last = texts[-1] if texts else "SELECT NULL WHERE false"
    st = classify_statement(last) if uses_smolql(last) else None
    final, final_params = last, params
    if st is not None and st.kind == "query":
        plan, _ = evaluate_stages(con, settings, *name_placeholders(st.text, params))
        final, final_params = plan.final_sql(), bound(plan.tree, plan.params)
    elif st is not None:
        return run_statement(con, settings, last, params).to_reader()
    try:
        return con.sql(final, params=final_params).to_arrow_reader(batch_size)
    except duckdb.Error as e:
        raise sql_error(e) from e


@contextlib.contextmanager
def _boundary(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Where SQL meets the user: every DuckDB error leaves as a SmolQL (PEP 249) error, and a
    missing table in a database without catalogs says so (a mistyped ``--db`` path)."""
    try:
        yield
    except duckdb.Error as e:
        raise _hint(con, sql_error(e)) from e
    except SmolQLError as e:
        _hint(con, e)
        raise


def _hint(con: duckdb.DuckDBPyConnection, e: SmolQLError) -> SmolQLError:
    if _missing_table(e) and not _has_catalogs(con):
        e.message = (
            f"{e.message}; this database has no catalogs yet (a new, empty database: check"
            " the path, or create one with `smolql catalog create NAME FOLDER`)"
        )
        e.args = (e.message,)
    return e


def _missing_table(e: SmolQLError) -> bool:
    return "Table with name" in e.message and "does not exist" in e.message


def _has_catalogs(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        return bool(catalog_names(con))
    except duckdb.Error:
        return True


def run_statement(con, settings: Settings, text: str, params=None) -> pa.Table:
    st = classify_statement(text)
    if st.kind == "duckdb":
        return query_arrow(con, *_duckdb_params(text, params))
    if st.kind in ("set", "reset"):
        return _setting(settings, text)
    text, values = name_placeholders(st.text, params)
    if st.kind == "explain":
        return pa.table({"plan": explain(con, settings, parse_one(text), values)})
    table, stats, plan = run_query(con, settings, text, values)
    if st.kind == "explain_analyze":
        return pa.table({"plan": explain_analyze(plan, stats)})
    return table


def name_placeholders(sql: str, params) -> tuple[str, dict]:
    """Give every parameter a name: each ``?`` becomes ``$p1``, ``$p2``... and ``:name``
    becomes ``$name``, so that any query derived from the statement (pre-filters, the final
    query) binds exactly the parameters it contains. Values are always bound by DuckDB, never
    written into SQL text."""
    if params is None:
        return sql, {}
    positional = not isinstance(params, dict)
    values = {f"p{i + 1}": v for i, v in enumerate(params)} if positional else dict(params)
    tokens = Tokenizer(dialect="duckdb").tokenize(sql)
    out, last, n = [], 0, 0
    for t, nxt in zip(tokens, [*tokens[1:], None], strict=True):
        if t.token_type == TokenType.PLACEHOLDER and t.text == "?":
            n += 1
            out += [sql[last : t.start], f"$p{n}"]
            last = t.end + 1
        elif (
            t.token_type == TokenType.COLON
            and nxt is not None
            and nxt.start == t.end + 1
            and nxt.text in values
        ):
            out += [sql[last : t.start], "$"]
            last = t.end + 1
    if positional and n != len(values):
        raise QueryError(f"{len(values)} parameters given for {n} placeholders")
    return "".join(out) + sql[last:], values


def _duckdb_params(sql: str, params):
    """DuckDB takes ``?`` and ``$name`` natively; ``:name`` (with a dict) becomes ``$name``."""
    if isinstance(params, dict):
        return name_placeholders(sql, params)
    return sql, params


def _setting(settings: Settings, text: str) -> pa.Table:
    words = text.split(None, 1)
    body = words[1].strip().rstrip(";") if len(words) > 1 else ""
    name, _, value = body.partition("=")
    name = name.strip()[len("smolql.") :].strip()
    if words[0].lower() == "reset":
        settings.reset(name)
    else:
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("''", "'")
        settings.set(name, value)
    return pa.table({"setting": [name], "value": [settings.text(name)]})


def _cost(con) -> callable:
    """Seconds per image of a model's inference: measured on this machine, else by pixels."""

    def cost(model: str) -> float:
        measured = stored_choice(get_model(model))
        if measured is not None and measured.images_per_s:
            return 1.0 / measured.images_per_s
        return get_model(model).input_size ** 2 / 224**2 / 100.0

    return cost


def evaluate_stages(
    con, settings: Settings, text: str, values: dict
) -> tuple[QueryPlan, QueryStats]:
    """Plan a UDF statement and run its stages; the plan's final query is then ready."""
    plan = plan_query(parse_one(text), settings.model, _cost(con), values)
    plan.params = values
    stats = QueryStats()
    physical = physical_plan(con, settings, plan)  # every decision, before anything runs
    for planned in physical.values():
        if planned.choice.note:
            warnings.warn(planned.choice.note, PlanWarning, stacklevel=4)
    for stage in plan.stages:
        ensure_engine(con, physical[stage.index].plan, lambda s=stage: _stage_catalog(con, s))
    if plan.early_limit is not None:
        _run_early(con, settings, plan, stats, physical)
        return plan, stats
    for stage in plan.stages:
        s = None
        if in_duckdb.applies(stage):
            s = in_duckdb.run_stage(con, settings, stage, physical[stage.index], values)
        if s is None:
            s, table = run_stage(con, settings, stage, physical[stage.index], values=values)
            clear_name(con, stage.table)
            con.register(stage.table, table)
        stats.stages[stage.index] = s
    return plan, stats


def physical_plan(con, settings: Settings, plan: QueryPlan) -> dict[int, StagePlan]:
    """Each stage's physical plan, by stage index: what EXPLAIN shows and the executor runs.
    The cost model reads the catalog's header statistics and profile here, at planning."""
    out = {}
    for s in plan.stages:
        choice = _choose(con, settings, s)
        catalog = _stage_catalog(con, s)
        headers, profiled = [], None
        if catalog is not None:
            source = choice.plan.source if choice.plan is not None else ORIGINAL
            rows = image_headers(con, catalog, None if source == ORIGINAL else source)
            headers = [Header(*r) for r in rows]
            stored = profile_cost_model(con, catalog, machine_id())
            profiled = CostModel.from_json(stored) if stored else None
        out[s.index] = plan_stage(settings, s.call.model, choice, headers, profiled)
    return out


def run_query(con, settings: Settings, text: str, values: dict):
    plan, stats = evaluate_stages(con, settings, text, values)
    start = time.perf_counter()
    table = query_arrow(con, plan.final_sql(), bound(plan.tree, plan.params))
    stats.final_seconds = time.perf_counter() - start
    stats.final_rows = table.num_rows
    return table, stats, plan


def _run_early(con, settings: Settings, plan: QueryPlan, stats: QueryStats, physical: dict) -> None:
    """LIMIT n without ORDER BY: evaluate the UDFs round by round, each round on new images
    only, until n rows qualify."""
    first = plan.stages[0]
    try:
        rows = con.execute(
            f"SELECT DISTINCT ({IMAGE}).id FROM ({first.driver.sql('duckdb')}) ORDER BY 1",
            bound(first.driver, plan.params),
        ).fetchall()
    except duckdb.Error:  # e.g. no image value (a string, another struct): say so
        driver_rows(con, first, False, plan.params)  # raises the clear error
        raise
    ids = [r[0] for r in rows]
    step = (settings.batch_size or 32) * 2
    restricted = plan.tree.copy()
    restricted.set("limit", None)
    image_id = exp.Dot(
        this=exp.Paren(this=plan.root_image.copy()), expression=exp.to_identifier("id")
    )
    done_filter = exp.condition(
        f"{image_id.sql('duckdb')} IN (SELECT id FROM __smolql_done)", dialect="duckdb"
    )
    restricted = restricted.where(done_filter, copy=False)
    count_sql = f"SELECT count(*) FROM ({restricted.sql('duckdb')})"
    tables: dict[int, list[pa.Table]] = {s.index: [] for s in plan.stages}
    for start in range(0, max(len(ids), 1), step):
        chunk = pa.table({"id": pa.array(ids[: start + step], pa.int32())})
        con.register("__smolql_done", chunk)
        con.register(DONE_TABLE, chunk.slice(start))
        for stage in plan.stages:
            s, table = run_stage(
                con, settings, stage, physical[stage.index], restrict=True, values=plan.params
            )
            tables[stage.index].append(table)
            clear_name(con, stage.table)
            con.register(stage.table, pa.concat_tables(tables[stage.index]))
            stats.stages[stage.index] = stats.stages.get(stage.index, StageStats()).add(s)
        count = con.execute(count_sql, bound(restricted, plan.params)).fetchall()[0][0]
        if count >= plan.early_limit:
            break
    plan.tree = restricted.limit(plan.early_limit, copy=False)


def _stage_catalog(con, stage: Stage) -> str | None:
    """The catalog a stage's images come from (the first catalog its pre-filter reads)."""
    known = set(catalog_names(con))
    return next((t.name for t in stage.driver.find_all(exp.Table) if t.name in known), None)


def _choose(con, settings: Settings, stage: Stage) -> plan_choice.Choice:
    targets = plan_choice.Targets(
        settings.min_accuracy, settings.max_accuracy_loss, settings.min_throughput
    )
    if not targets.any:
        return plan_choice.Choice(None)
    catalog = _stage_catalog(con, stage)
    profiles = plan_choice.load(con, catalog) if catalog else plan_choice.Profiles()
    return plan_choice.choose(
        profiles,
        targets,
        catalog=catalog or "(none)",
        model=stage.call.model,
        explicit=stage.call.explicit,
        originals_only=stage.call.roi is not None,
    )


def _describe(stage: Stage, model: str | None = None) -> str:
    call = stage.call
    roi = "crop(...) region" if call.roi else "the model's centre crop"
    return (
        f"{call.kind}({call.image.sql('duckdb')}{', crop' if call.roi else ''})"
        f" model={model or call.model}"
        + (f" k={call.k}" if any(a.name == "k" for a in call.function.arguments) else "")
        + f"; ROI pushdown: partial JPEG decode of {roi}"
    )


def explain(con, settings: Settings, tree: exp.Expression, values: dict | None = None) -> list[str]:
    plan = plan_query(tree, settings.model, _cost(con), values)
    physical = physical_plan(con, settings, plan)
    lines = []
    for stage in plan.stages:
        rows = driver_rows(con, stage, False, values) if not _depends(stage, plan) else None
        n = rows.num_rows if rows is not None else None
        choice, p = physical[stage.index].choice, physical[stage.index].plan
        cached = 0
        if rows is not None and settings.cache:
            images = [r for r in rows.column(IMAGE).to_pylist() if r]
            hashes = sorted({c.hash for c in resolve(con, images).values() if c.hash})
            keys = pa.table({"hash": pa.array(hashes, pa.string()), "roi": [""] * len(hashes)})
            cached = len(
                cache.lookup(
                    con, keys, p.spec.name, p.spec.weights_hash(), p.physical.key, stage.call.k
                )
            )
        lines.append(f"Stage {stage.index}: {_describe(stage, p.spec.name)}")
        lines.append(f"  pre-filter (DuckDB): {stage.driver.sql('duckdb')}")
        lines.append(f"  rows: {n if n is not None else 'depends on an earlier stage'}")
        lines += physical[stage.index].lines()
        lines += choice.lines()
        if n is not None:
            lines.append(f"  cache: {cached} of {n} images cached")
            lines += physical[stage.index].cost_lines(max(n - cached, 0))
    if plan.early_limit is not None:
        lines.append(
            f"LIMIT {plan.early_limit} without ORDER BY: inference stops once enough rows qualify"
        )
    if plan.stages:
        executor = get_executor(settings.executor)
        where_to = where(executor.describe, settings.ray_address)
        lines.append(f"Executor {executor.name}: {executor.describe(**where_to)}")
    lines.append(f"Final query (DuckDB): {plan.final_sql()}")
    return lines


def _depends(stage: Stage, plan: QueryPlan) -> bool:
    names = {s.table for s in plan.stages if s is not stage}
    return any(t.name in names for t in stage.driver.find_all(exp.Table))


def explain_analyze(plan: QueryPlan, stats: QueryStats) -> list[str]:
    lines = []
    for stage in plan.stages:
        s = stats.stages.get(stage.index, StageStats())
        lines.append(f"Stage {stage.index}: {_describe(stage, s.model)}")
        lines += s.ran
        lines.append(
            f"  rows from pre-filter {s.driver_rows}, cached {s.cached}, inferred {s.inferred},"
            f" errors {s.errors}, files checked {s.checked}, {s.seconds:.3f} s"
        )
        for node, (images, busy) in sorted(s.nodes.items()):
            lines.append(
                f"  node {node}: {images} images, {images / max(s.seconds, 1e-9):.1f} img/s of"
                f" the stage's wall time, {busy:.2f} s busy there"
            )
    lines.append(f"Final query: {stats.final_rows} rows, {stats.final_seconds:.3f} s")
    return lines


__all__ = ["SETTINGS", "ImageWarning", "PlanWarning", "run_script"]
