"""Run SQL: plain DuckDB statements untouched; statements with SmolQL UDFs as planned stages
(pre-filter in DuckDB -> cached or fresh inference -> final query in DuckDB); SET/RESET of
SmolQL settings; EXPLAIN [ANALYZE] of UDF queries."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from smolql import changes
from smolql.backends.cpu import machine_id
from smolql.config import SETTINGS, Settings
from smolql.errors import QueryError, SmolQLError
from smolql.executor import cached as in_duckdb
from smolql.executor.base import where
from smolql.executor.calibrate import ensure_engine
from smolql.executor.prepared import Plans, Prepared
from smolql.executor.registry import get_executor
from smolql.executor.stage import DONE_TABLE, ImageWarning, StageStats, driver_rows, run_stage
from smolql.freshness import resolve
from smolql.ingest.manage import names as catalog_names
from smolql.models.registry import get_model
from smolql.planner import targets as plan_choice
from smolql.planner.cost import CostModel
from smolql.planner.engines import stored_choice
from smolql.planner.physical import IN_DUCKDB, StagePlan, plan_stage
from smolql.planner.rates import Header
from smolql.planner.space import ORIGINAL
from smolql.sql.logical import IMAGE, QueryPlan, Stage, plan_query
from smolql.sql.parse import Statement, classify_statement, parse_one, split, uses_smolql
from smolql.sql.run import bound, clear_name, query_arrow, sql_error
from smolql.storage import cache
from smolql.storage.catalogs import relations
from smolql.storage.profiles import cost_model as profile_cost_model
from smolql.storage.schema import image_headers
from smolql.watch import WATCHER

# a statement that only reads: anything else counts as a write (changes.bump)
_READS = re.compile(r"^\s*(SELECT|FROM|VALUES|SHOW|DESCRIBE|SUMMARIZE)\b[^;]*;?\s*$", re.I)


class PlanWarning(UserWarning):
    """An accuracy or throughput target could not be used as asked (e.g. no profile yet)."""


@dataclass
class QueryStats:
    stages: dict[int, StageStats] = field(default_factory=dict)
    final_rows: int = 0
    final_seconds: float = 0.0
    not_kept: str = ""  # why the stage tables are not reused by a repeat ('' when they may be)


def run_script(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    sql: str,
    params=None,
    plans: Plans | None = None,
) -> pa.Table:
    """Run one or more statements; return the last one's result as Arrow. ``plans``: the
    connection's statements kept planned (none: plan every statement afresh)."""
    with _boundary(con):
        statements = _statements(sql, changes.writes())
        if statements is None:
            _note_write(sql)
            return query_arrow(con, *_duckdb_params(sql, params))  # exactly DuckDB
        result = pa.table({})
        for st in statements:
            result = run_statement(con, settings, st, params, plans)
        return result


@functools.lru_cache(maxsize=256)
def _statements(sql: str, writes: int) -> tuple[Statement, ...] | None:
    """The script's statements, classified; None when none is SmolQL's (plain DuckDB).
    Kept per text while no write (a new function among them) was counted."""
    if not uses_smolql(sql):
        return None
    return tuple(classify_statement(text) for text in split(sql))


def _note_write(sql: str) -> None:
    """Count a statement that may write (anything but a plain read), for plans kept."""
    if not _READS.match(sql):
        changes.bump()


def stream_script(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    sql: str,
    params=None,
    batch_size: int = 8192,
    plans: Plans | None = None,
) -> pa.RecordBatchReader:
    """Like :func:`run_script`, but the last statement's rows arrive as a stream of Arrow
    record batches (the UDF stages run first; DuckDB then streams the final query)."""
    with _boundary(con):
        return _stream(con, settings, sql, params, batch_size, plans)


def _stream(
    con, settings: Settings, sql: str, params, batch_size: int, plans: Plans | None
) -> pa.RecordBatchReader:
    statements = _statements(sql, changes.writes())
    if statements is None:
        _note_write(sql)
        statements = (Statement(sql, "duckdb"),)
    for st in statements[:-1]:
        run_statement(con, settings, st, params, plans)
    st = statements[-1] if statements else Statement("SELECT NULL WHERE false", "duckdb")
    final, final_params = st.text, params
    if st.kind == "query":
        prepared, _ = evaluate_stages(con, settings, *name_placeholders(st.text, params), plans)
        final, final_params = prepared.final, prepared.final_params
        _note_final(prepared)
    elif st.kind != "duckdb":
        return run_statement(con, settings, st, params, plans).to_reader()
    else:
        final, final_params = _duckdb_params(final, params)
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


def run_statement(
    con, settings: Settings, st: Statement, params=None, plans: Plans | None = None
) -> pa.Table:
    if st.kind == "duckdb":
        _note_write(st.text)
        return query_arrow(con, *_duckdb_params(st.text, params))
    if st.kind in ("set", "reset"):
        return _setting(settings, st.text)
    text, values = name_placeholders(st.text, params)
    if st.kind == "explain":
        return pa.table({"plan": explain(con, settings, parse_one(text), values)})
    table, stats, plan = run_query(con, settings, text, values, plans)
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


def _unwitnessed(con, tree: exp.Expression, database: str | None) -> str:
    """:func:`smolql.changes.unwitnessed` for ``tree`` on this connection; a catalog that
    cannot be listed is a reason too (the statement still runs, its stages are never reused)."""
    if database is None:
        return changes.unwitnessed(tree, None)
    try:
        seen = relations(con)
    except duckdb.Error as e:
        return f"the database's tables and views could not be listed ({e})"
    return changes.unwitnessed(tree, seen)


def evaluate_stages(
    con, settings: Settings, text: str, values: dict, plans: Plans | None = None
) -> tuple[Prepared, QueryStats]:
    """Plan a UDF statement (or take it from ``plans``) and run its stages (or reuse their
    tables, when :class:`~smolql.executor.prepared.Plans` says they are still right); the final
    query is then ready to run."""
    key = Plans.key(text, values, settings) if plans is not None else None
    prepared = plans.get(con, key) if plans is not None else None
    database = plans.database if plans is not None else None
    if prepared is None:
        at = changes.stamp(database)  # before planning: a change meanwhile plans it again
        prepared = _prepare(con, settings, text, values, plans.tag() if plans else "", at)
        if plans is not None and prepared.plan.early_limit is None:
            prepared.unwitnessed = _unwitnessed(con, prepared.plan.tree, database)
            plans.put(con, key, prepared)
    for note in prepared.notes:
        warnings.warn(note, PlanWarning, stacklevel=4)
    stats = QueryStats(not_kept=prepared.unwitnessed)
    if plans is not None and plans.reusable(prepared, settings):
        stats.stages = plans.reused(prepared)
        return prepared, stats
    plan, physical = prepared.plan, prepared.physical
    for stage in plan.stages:
        ensure_engine(con, physical[stage.index].plan, lambda s=stage: _stage_catalog(con, s))
    if plan.early_limit is not None:
        _run_early(con, settings, plan, stats, physical)
        prepared.final, prepared.final_params = plan.final_sql(), bound(plan.tree, plan.params)
        return prepared, stats
    before, watched = changes.stamp(database), WATCHER.generation()
    prepared.watched = -1  # until this run ends well, its tables are not to be reused
    for stage in plan.stages:
        s, planned = None, physical[stage.index]
        if planned.path == IN_DUCKDB:
            s = in_duckdb.run_stage(con, settings, stage, planned, values)
            planned = dataclasses.replace(planned, path="fallback")  # where it cannot
        if s is None:
            s, table = run_stage(con, settings, stage, planned, values=values)
            clear_name(con, stage.table)
            con.register(stage.table, table)
        stats.stages[stage.index] = s
    if plans is not None:
        plans.ran(prepared, before, watched, stats.stages)
    return prepared, stats


def stage_plans(con, settings: Settings, text: str) -> dict[int, StagePlan]:
    """Each stage's physical plan for the statement ``text``, as a run makes it and EXPLAIN
    shows it (parsing and planning only: nothing runs)."""
    return _prepare(con, settings, text, {}, "", changes.stamp(None)).physical


def _prepare(
    con, settings: Settings, text: str, values: dict, tag: str, at: changes.Stamp
) -> Prepared:
    """Parse and plan a UDF statement: its stages, their physical plans, the final query."""
    plan = plan_query(parse_one(text), settings.model, _cost(con), values, tag)
    plan.params = values
    physical = physical_plan(con, settings, plan)  # every decision, before anything runs
    notes = [p.choice.note for p in physical.values() if p.choice.note]
    final = plan.final_sql() if plan.early_limit is None else ""
    final_params = bound(plan.tree, values)
    return Prepared(plan, physical, final, final_params, at, notes)


def _note_final(prepared: Prepared) -> None:
    """A UDF statement that writes (CREATE TABLE ... AS, INSERT ... SELECT) counts as one."""
    if not isinstance(prepared.plan.tree, exp.Query):
        changes.bump()


def physical_plan(con, settings: Settings, plan: QueryPlan) -> dict[int, StagePlan]:
    """Each stage's physical plan, by stage index: what EXPLAIN shows and the executor runs.
    The cost model reads the catalog's header statistics and profile here, at planning."""
    out = {}
    for s in plan.stages:
        catalog = _stage_catalog(con, s)
        choice = _choose(con, settings, s, catalog)
        headers, profiled = [], None
        if catalog is not None:
            source = choice.plan.source if choice.plan is not None else ORIGINAL
            rows = image_headers(con, catalog, None if source == ORIGINAL else source)
            headers = [Header(*r) for r in rows]
            stored = profile_cost_model(con, catalog, machine_id())
            profiled = CostModel.from_json(stored) if stored else None
        out[s.index] = plan_stage(
            settings,
            s.call.model,
            choice,
            headers,
            profiled,
            catalog=catalog,
            path=in_duckdb.path(s),
        )
    return out


def run_query(con, settings: Settings, text: str, values: dict, plans: Plans | None = None):
    prepared, stats = evaluate_stages(con, settings, text, values, plans)
    start = time.perf_counter()
    try:
        table = query_arrow(con, prepared.final, prepared.final_params)
    finally:
        _note_final(prepared)
    stats.final_seconds = time.perf_counter() - start
    stats.final_rows = table.num_rows
    return table, stats, prepared.plan


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


def _choose(con, settings: Settings, stage: Stage, catalog: str | None) -> plan_choice.Choice:
    targets = plan_choice.Targets(
        settings.min_accuracy, settings.max_accuracy_loss, settings.min_throughput
    )
    if not targets.any:
        return plan_choice.Choice(None)
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
        choice, p = physical[stage.index].choice, physical[stage.index].plan
        n, cached = _counts(con, settings, plan, stage, physical[stage.index], values)
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


def _counts(
    con, settings: Settings, plan: QueryPlan, stage: Stage, planned: StagePlan, values
) -> tuple[int | None, int]:
    """EXPLAIN's rows of a stage's pre-filter (None: it reads an earlier stage's results) and
    how many of their contents the cache answers."""
    if _depends(stage, plan):
        return None, 0
    if planned.path == IN_DUCKDB:
        counted = in_duckdb.count_cached(con, settings, stage, planned, values)
        if counted is not None:
            return counted
    rows = driver_rows(con, stage, False, values)
    if not settings.cache:
        return rows.num_rows, 0
    p = planned.plan
    images = [r for r in rows.column(IMAGE).to_pylist() if r]
    hashes = sorted({c.hash for c in resolve(con, images).values() if c.hash})
    keys = pa.table({"hash": pa.array(hashes, pa.string()), "roi": [""] * len(hashes)})
    found = cache.lookup(
        con, keys, p.spec.name, p.spec.weights_hash(), p.physical.key, stage.call.k
    )
    return rows.num_rows, len(found)


def _depends(stage: Stage, plan: QueryPlan) -> bool:
    names = {s.table for s in plan.stages if s is not stage}
    return any(t.name in names for t in stage.driver.find_all(exp.Table))


def explain_analyze(plan: QueryPlan, stats: QueryStats) -> list[str]:
    lines = []
    for stage in plan.stages:
        s = stats.stages.get(stage.index, StageStats())
        lines.append(f"Stage {stage.index}: {_describe(stage, s.model)}")
        lines += s.ran
        if s.reused:
            lines.append(
                "  reused: the results this statement's last run looked up (no write and no"
                " change to any of its files since)"
            )
        lines.append(
            f"  rows from pre-filter {s.driver_rows}, cached {s.cached}, inferred {s.inferred},"
            f" errors {s.errors}, files checked {s.checked}, {s.seconds:.3f} s"
        )
        for node, (images, busy) in sorted(s.nodes.items()):
            lines.append(
                f"  node {node}: {images} images, {images / max(s.seconds, 1e-9):.1f} img/s of"
                f" the stage's wall time, {busy:.2f} s busy there"
            )
    if stats.not_kept and plan.stages:
        lines.append(f"Stage results not reused by a repeat: {stats.not_kept}")
    lines.append(f"Final query: {stats.final_rows} rows, {stats.final_seconds:.3f} s")
    return lines


__all__ = ["SETTINGS", "ImageWarning", "PlanWarning", "run_script"]
