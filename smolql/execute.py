"""Run SQL: plain DuckDB statements untouched; statements with SmolQL UDFs as planned stages
(pre-filter in DuckDB -> cached or fresh inference -> final query in DuckDB); SET/RESET of
SmolQL settings; EXPLAIN [ANALYZE] of UDF queries."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from smolql import cache
from smolql.catalog.manage import names as catalog_names
from smolql.classify import Plan, make_plan, predictions
from smolql.config import SETTINGS, Settings
from smolql.errors import DecodeError, QueryError
from smolql.models.registry import get_model
from smolql.ops.pipeline import ImageRef
from smolql.ops.spec import Rect
from smolql.parse import classify_statement, parse_one, split, uses_smolql
from smolql.plan import choose as plan_choice
from smolql.plan.logical import IMAGE, ROI, QueryPlan, Stage, plan_query
from smolql.plan.space import ORIGINAL
from smolql.sqlrun import query_arrow, sql_error

VALUE = pa.struct(
    [
        ("label", pa.string()),
        ("score", pa.float64()),
        ("class_index", pa.int32()),
        ("model", pa.string()),
    ]
)
IMAGE_FIELDS = {"catalog", "id", "path", "hash"}
# Rough per-image costs on one core for EXPLAIN's estimate (benchmarks/preprocess.py).
DECODE_S, RESIZE_S = 0.0015, 0.00025


class ImageWarning(UserWarning):
    """An image could not be decoded; its UDF result is NULL."""


class PlanWarning(UserWarning):
    """An accuracy or throughput target could not be used as asked (e.g. no profile yet)."""


@dataclass
class StageStats:
    driver_rows: int = 0
    cached: int = 0
    inferred: int = 0
    errors: int = 0
    seconds: float = 0.0

    def add(self, later: StageStats) -> StageStats:
        """Totals over chunks; ``driver_rows`` is the latest (the pre-filter grows)."""
        return StageStats(
            later.driver_rows,
            self.cached + later.cached,
            self.inferred + later.inferred,
            self.errors + later.errors,
            self.seconds + later.seconds,
        )


@dataclass
class QueryStats:
    stages: dict[int, StageStats] = field(default_factory=dict)
    final_rows: int = 0
    final_seconds: float = 0.0


def run_script(
    con: duckdb.DuckDBPyConnection, settings: Settings, sql: str, params=None
) -> pa.Table:
    """Run one or more statements; return the last one's result as Arrow."""
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


def bound(tree: exp.Expression, values: dict) -> dict | None:
    """The parameters that ``tree`` uses (DuckDB rejects unused ones)."""
    names = {p.name for p in tree.find_all(exp.Placeholder) if p.name}
    missing = names - values.keys()
    if missing:
        raise QueryError(f"no value given for parameter(s) {', '.join(sorted(missing))}")
    return {n: values[n] for n in names} or None


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
    return pa.table({"setting": [name], "value": [str(getattr(settings, name))]})


def _cost(con) -> callable:
    def cost(model: str) -> float:
        rows = con.execute(
            "SELECT max(images_per_s) FROM smolql.backend_profiles WHERE model = ?", [model]
        ).fetchall()
        if rows and rows[0][0]:
            return 1.0 / rows[0][0]
        return get_model(model).input_size ** 2 / 224**2 / 100.0

    return cost


def evaluate_stages(
    con, settings: Settings, text: str, values: dict
) -> tuple[QueryPlan, QueryStats]:
    """Plan a UDF statement and run its stages; the plan's final query is then ready."""
    plan = plan_query(parse_one(text), settings.model, _cost(con))
    plan.params = values
    stats = QueryStats()
    if plan.early_limit is not None:
        _run_early(con, settings, plan, stats)
    else:
        for stage in plan.stages:
            stats.stages[stage.index] = _run_stage(con, settings, stage, values=values)
    return plan, stats


def run_query(con, settings: Settings, text: str, values: dict):
    plan, stats = evaluate_stages(con, settings, text, values)
    start = time.perf_counter()
    table = query_arrow(con, plan.final_sql(), bound(plan.tree, plan.params))
    stats.final_seconds = time.perf_counter() - start
    stats.final_rows = table.num_rows
    return table, stats, plan


def _run_early(con, settings: Settings, plan: QueryPlan, stats: QueryStats) -> None:
    """LIMIT n without ORDER BY: evaluate the UDFs batch by batch until n rows qualify."""
    first = plan.stages[0]
    ids = [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT ({IMAGE}).id FROM ({first.driver.sql('duckdb')}) ORDER BY 1",
            bound(first.driver, plan.params),
        ).fetchall()
    ]
    step = (settings.batch_size or 32) * 2
    done: list[int] = []
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
    for start in range(0, max(len(ids), 1), step):
        done += ids[start : start + step]
        con.register("__smolql_done", pa.table({"id": pa.array(done, pa.int32())}))
        for stage in plan.stages:
            s = _run_stage(con, settings, stage, restrict=done, values=plan.params)
            stats.stages[stage.index] = stats.stages.get(stage.index, StageStats()).add(s)
        count = con.execute(count_sql, bound(restricted, plan.params)).fetchall()[0][0]
        if count >= plan.early_limit:
            break
    plan.tree = restricted.limit(plan.early_limit, copy=False)


def _driver_rows(
    con, stage: Stage, restrict: list[int] | None, values: dict | None = None
) -> pa.Table:
    sql = stage.driver.sql("duckdb")
    if restrict is not None:
        sql = f"SELECT * FROM ({sql}) WHERE ({IMAGE}).id IN (SELECT id FROM __smolql_done)"
    try:
        table = con.sql(sql, params=bound(stage.driver, values or {})).to_arrow_table()
    except duckdb.Error as e:
        raise sql_error(e) from e
    kind = table.schema.field(IMAGE).type
    if not (pa.types.is_struct(kind) and {f.name for f in kind} >= IMAGE_FIELDS):
        raise QueryError(
            f"{stage.call.kind}() takes an image (a catalog's image column, or crop(image, ...)),"
            f" not {kind}"
        )
    return table


def _run_stage(
    con,
    settings: Settings,
    stage: Stage,
    restrict: list[int] | None = None,
    values: dict | None = None,
) -> StageStats:
    start = time.perf_counter()
    call = stage.call
    rows = _driver_rows(con, stage, restrict, values).to_pylist()
    stats = StageStats(driver_rows=len(rows))
    keys: dict[tuple[str, str], dict] = {}
    for r in rows:
        img = r[IMAGE]
        if img is None:
            continue
        roi = tuple(r[n] for n in ROI) if call.roi else None
        roi_key = ",".join(map(str, roi)) if roi else ""
        keys.setdefault((img["hash"], roi_key), {"img": img, "roi": roi})
    choice = _choose(con, settings, stage)
    if choice.note:
        warnings.warn(choice.note, PlanWarning, stacklevel=2)
    source = choice.plan.source if choice.plan else ORIGINAL
    refs = _refs(con, keys, source)
    plan = _udf_plan(con, settings, refs, call.model, choice)
    spec = plan.spec
    plan_key = _plan_key(plan)
    weights = spec.weights_hash()
    key_table = pa.table({"hash": [h for h, _ in keys], "roi": [r for _, r in keys]})
    found = (
        cache.lookup(con, key_table, spec.name, weights, plan_key, call.k) if settings.cache else {}
    )
    stats.cached = len(found)
    todo = [r for r in refs if r.key not in found]
    fresh: list[tuple[str, str, list]] = []
    if todo:
        for p in predictions(plan, todo, k=call.k, progress=False):
            if p.error:
                stats.errors += 1
                if settings.on_error == "fail":
                    path, _, reason = p.error.partition(": ")
                    raise DecodeError(f"cannot classify image: {reason}", file=path)
                warnings.warn(p.error, ImageWarning, stacklevel=2)
                continue
            topk = [{"class_index": i, "label": lab, "score": sc} for i, lab, sc in p.topk]
            found[p.key] = topk
            fresh.append((p.key[0], p.key[1], topk))
        stats.inferred = len(todo)
        if settings.cache:
            cache.store(con, fresh, spec.name, weights, plan_key, call.k)
    con.register(stage.table, _results(keys, found, call, spec.name))
    stats.seconds = time.perf_counter() - start
    return stats


def _udf_plan(
    con, settings: Settings, refs: list[ImageRef], model: str, choice: plan_choice.Choice
) -> Plan:
    """The chosen profiled plan, or the model at full quality with the measured backend."""
    return make_plan(
        con,
        settings,
        refs,
        model=model,
        backend=None,
        precision=None,
        batch_size=None,
        rendition=None,
        physical=choice.plan,
    )


def _plan_key(plan: Plan) -> str:
    """The plan part of the cache key: what else could change a result for the same image
    (the weights are a key column of their own)."""
    return plan.physical.key


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


def _refs(con, keys: dict, source: str = ORIGINAL) -> list[ImageRef]:
    pairs = {(v["img"]["catalog"], v["img"]["id"]) for v in keys.values()}
    orientation, renditions = {}, {}
    if pairs:
        con.register(
            "__smolql_ids",
            pa.table(
                {
                    "catalog": [c for c, _ in pairs],
                    "id": pa.array([i for _, i in pairs], pa.int32()),
                }
            ),
        )
        orientation = {
            (c, i): o
            for c, i, o in con.execute(
                "SELECT i.catalog, i.id, i.orientation FROM smolql.images i"
                " JOIN __smolql_ids q USING (catalog, id)"
            ).fetchall()
        }
        if source != ORIGINAL:
            renditions = {
                (c, i): p
                for c, i, p in con.execute(
                    "SELECT r.catalog, r.image_id, r.path FROM smolql.renditions r"
                    " JOIN __smolql_ids q ON r.catalog = q.catalog AND r.image_id = q.id"
                    " WHERE r.spec = ?",
                    [source],
                ).fetchall()
            }
        con.unregister("__smolql_ids")
    refs = []
    for key, v in keys.items():
        img, roi = v["img"], v["roi"]
        rect = None
        if roi is not None:
            if any(a is None for a in roi):
                continue
            try:
                rect = Rect(*(int(a) for a in roi))
            except QueryError:
                continue  # an empty or negative region has no result: NULL
        o = orientation.get((img["catalog"], img["id"]))
        small = renditions.get((img["catalog"], img["id"])) if source != ORIGINAL else None
        if small is not None and rect is None:
            refs.append(ImageRef(key, small, 1))  # renditions are stored upright
        else:
            refs.append(ImageRef(key, img["path"], o, rect))
    return refs


def _results(keys: dict, found: dict, call, model: str) -> pa.Table:
    """The stage's lookup table: hash, region and the UDF value (NULL where no result)."""
    values = []
    for key in keys:
        topk = found.get(key)
        items = [{**t, "model": model} for t in topk] if topk is not None else None
        values.append(items if items is None or call.kind == "classify_topk" else items[0])
    rois = [v["roi"] or (None,) * 4 for v in keys.values()]
    columns = {"__hash": pa.array([h for h, _ in keys], pa.string())}
    for i, name in enumerate(ROI):
        columns[name] = pa.array([r[i] for r in rois], pa.int64())
    value_type = pa.list_(VALUE) if call.kind == "classify_topk" else VALUE
    columns["__v"] = pa.array(values, value_type)
    return pa.table(columns)


def _describe(stage: Stage) -> str:
    call = stage.call
    roi = "crop(...) region" if call.roi else "the model's centre crop"
    return (
        f"{call.kind}({call.image.sql('duckdb')}{', crop' if call.roi else ''}) model={call.model}"
        + (f" k={call.k}" if call.kind == "classify_topk" else "")
        + f"; ROI pushdown: partial JPEG decode of {roi}"
    )


def explain(con, settings: Settings, tree: exp.Expression, values: dict | None = None) -> list[str]:
    plan = plan_query(tree, settings.model, _cost(con))
    lines = []
    for stage in plan.stages:
        rows = _driver_rows(con, stage, None, values) if not _depends(stage, plan) else None
        n = rows.num_rows if rows is not None else None
        choice = _choose(con, settings, stage)
        p = _udf_plan(con, settings, [], stage.call.model, choice)
        cached = 0
        if rows is not None and settings.cache:
            hashes = [r["hash"] for r in rows.column(IMAGE).to_pylist() if r]
            keys = pa.table({"hash": hashes, "roi": [""] * len(hashes)})
            cached = len(
                cache.lookup(
                    con, keys, p.spec.name, p.spec.weights_hash(), _plan_key(p), stage.call.k
                )
            )
        lines.append(f"Stage {stage.index}: {_describe(stage)}")
        lines.append(f"  pre-filter (DuckDB): {stage.driver.sql('duckdb')}")
        lines.append(f"  rows: {n if n is not None else 'depends on an earlier stage'}")
        lines.append(
            f"  plan: {p.physical.describe()}, batch={p.batch_size}"
            f" ({p.decode_workers} decode + {p.infer_threads} inference threads)"
        )
        lines += choice.lines()
        if n is not None:
            todo = max(n - cached, 0)
            lines.append(f"  cache: {cached} of {n} images cached")
            if choice.chosen is not None:
                seconds = todo / choice.chosen.per_s
                lines.append(f"  est. cost: {seconds:.2f} s for {todo} images (cost model)")
            else:
                infer_s = todo * _cost(con)(stage.call.model)
                lines.append(
                    f"  est. cost: decode {todo * DECODE_S:.2f} s,"
                    f" resize/normalise {todo * RESIZE_S:.2f} s,"
                    f" inference {infer_s:.2f} s"
                )
    if plan.early_limit is not None:
        lines.append(
            f"LIMIT {plan.early_limit} without ORDER BY: inference stops once enough rows qualify"
        )
    lines.append(f"Final query (DuckDB): {plan.final_sql()}")
    return lines


def _depends(stage: Stage, plan: QueryPlan) -> bool:
    names = {s.table for s in plan.stages if s is not stage}
    return any(t.name in names for t in stage.driver.find_all(exp.Table))


def explain_analyze(plan: QueryPlan, stats: QueryStats) -> list[str]:
    lines = []
    for stage in plan.stages:
        s = stats.stages.get(stage.index, StageStats())
        lines.append(f"Stage {stage.index}: {_describe(stage)}")
        lines.append(
            f"  rows from pre-filter {s.driver_rows}, cached {s.cached}, inferred {s.inferred},"
            f" errors {s.errors}, {s.seconds:.3f} s"
        )
    lines.append(f"Final query: {stats.final_rows} rows, {stats.final_seconds:.3f} s")
    return lines


__all__ = ["SETTINGS", "run_script"]
