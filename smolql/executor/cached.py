"""Run a stage with DuckDB doing the per-row work: a cached query without Python per image.

The general stage (:mod:`smolql.executor.stage`) brings every image value into Python. Here
DuckDB decides which values it can answer: a value whose path and hash are a catalog row of a
file that :data:`~smolql.watch.WATCHER` vouches for (signature verified, no change reported
since) is keyed by that hash. Only the rest come to Python: values not vouched for (resolved
by :func:`~smolql.freshness.resolve`, which stats or reads them, then vouches for them) and
keys the cache lacks (inferred). The stage's lookup table is a temporary view that joins
those keys to the cache, so the final query reads cached results where they lie.

It serves model functions with a SQL form of their value (``SqlFunction.sql_value``) called
on whole images; crops and LIMIT rounds take the general path.
"""

from __future__ import annotations

import time

import duckdb
import pyarrow as pa
from sqlglot import exp

from smolql.config import Settings
from smolql.freshness import Expected, resolve
from smolql.models.spec import TOPK
from smolql.ops.pipeline import ImageRef
from smolql.planner.physical import StagePlan
from smolql.planner.space import ORIGINAL
from smolql.sql.logical import IMAGE, Stage
from smolql.sql.run import bound, sql_error
from smolql.storage import cache
from smolql.storage.schema import SCHEMA, renditions_by_hash
from smolql.watch import WATCHER

from .stage import IMAGE_FIELDS, Key, StageStats, infer, report

SIGNATURE = ("bytes", "mtime_ns", "ctime_ns", "inode")
OVERRIDES = pa.schema([("path", pa.string()), ("claimed", pa.string()), ("current", pa.string())])
TOPK_SQL = "STRUCT(class_index INTEGER, label VARCHAR, score DOUBLE)[]"  # as udf_cache.topk
FRESH = pa.schema([("hash", pa.string()), ("topk", TOPK)])


def applies(stage: Stage, settings: Settings) -> bool:
    """Whether this path can run ``stage``: a whole-image call of a function with a SQL value."""
    return stage.call.roi is None and stage.call.function.sql_value is not None


def run_stage(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    planned: StagePlan,
    values: dict | None = None,
) -> StageStats | None:
    """Evaluate ``stage`` and create its lookup view (``stage.table``); None when its image
    argument is not an image value with text path and hash (the general path says why)."""
    start = time.perf_counter()
    driver = stage.driver.sql("duckdb")
    params = bound(stage.driver, values or {})
    if not _image_typed(con, driver, params):
        return None
    plan = planned.plan
    stats = StageStats(ran=tuple(planned.lines()), model=plan.spec.name)
    names = _Names(stage.index)
    con.register(names.verified, WATCHER.verified())  # one snapshot for the whole stage
    cached = _cached_sql(stage, planned, settings)
    work = _query(con, _work_sql(driver, names, cached), params)
    stats.driver_rows = work["n"]
    refs, overrides, uncacheable = _refs(con, settings, stage, planned, work, stats)
    missing = {row["trusted"] for row in work["missing"]}
    stats.cached = work["keys"] - len(missing) + len(overrides.found)
    if overrides.table.num_rows:
        con.register(names.overrides, overrides.table)
    found = infer(con, settings, stage, plan, refs, uncacheable, stats)
    if found:
        con.register(names.fresh, _fresh(found))
    view = _view_sql(
        stage, plan.spec.name, cached, names, overrides.table.num_rows > 0, bool(found)
    )
    try:
        con.unregister(stage.table)  # a registered table of the name blocks the view
        con.execute(f"CREATE OR REPLACE TEMP VIEW {stage.table} AS {view}")
    except duckdb.Error as e:
        raise sql_error(e) from e
    stats.seconds = time.perf_counter() - start
    return stats


class _Names:
    def __init__(self, index: int) -> None:
        self.verified = f"__smolql_v{index}"
        self.overrides = f"__smolql_o{index}"
        self.fresh = f"__smolql_f{index}"


def _literal(text: str) -> str:
    return exp.Literal.string(text).sql("duckdb")


def _image_typed(con: duckdb.DuckDBPyConnection, driver: str, params: dict | None) -> bool:
    try:
        kind = con.sql(f"SELECT {IMAGE} FROM ({driver}) LIMIT 0", params=params).types[0]
    except duckdb.Error:
        return False  # the general path runs it and says what is wrong
    if kind.id != "struct":
        return False
    fields = {name: str(t) for name, t in kind.children}
    return fields.keys() >= IMAGE_FIELDS and fields["path"] == fields["hash"] == "VARCHAR"


def _cached_sql(stage: Stage, planned: StagePlan, settings: Settings) -> str | None:
    """The cache rows that serve this call (hash, k, topk), or None with the cache off."""
    if not settings.cache:
        return None
    spec, k = planned.plan.spec, int(stage.call.k)
    return (
        f"SELECT hash, k, topk FROM {SCHEMA}.udf_cache"
        f" WHERE model = {_literal(spec.name)} AND weights = {_literal(spec.weights_hash())}"
        f" AND plan = {_literal(planned.plan.physical.key)} AND roi = '' AND k >= {k}"
    )


def _work_sql(driver: str, names: _Names, cached: str | None) -> str:
    """In one pass over the driver's rows: their number, the number of vouched-for keys, and
    the values DuckDB cannot answer (not vouched for; vouched for but not cached)."""
    signature = ", ".join(f"w.{c}" for c in SIGNATURE)
    hits = f"(SELECT DISTINCT hash FROM ({cached}))" if cached else "(SELECT NULL AS hash)"
    return (
        f"WITH j AS (SELECT d.{IMAGE} AS img, w.hash AS trusted, w.orientation, {signature},"
        f" c.hash IS NOT NULL AS hit FROM ({driver}) d"
        f" LEFT JOIN {names.verified} w ON w.path = d.{IMAGE}.path AND w.hash = d.{IMAGE}.hash"
        f" LEFT JOIN {hits} c ON c.hash = w.hash)"
        " SELECT count(*), count(DISTINCT trusted),"
        " list(j) FILTER (WHERE trusted IS NULL AND img IS NOT NULL),"
        " list(j) FILTER (WHERE trusted IS NOT NULL AND NOT hit) FROM j"
    )


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None) -> dict:
    try:
        n, keys, untrusted, missing = con.execute(sql, params).fetchall()[0]
    except duckdb.Error as e:
        raise sql_error(e) from e
    return {"n": n or 0, "keys": keys or 0, "untrusted": untrusted or [], "missing": missing or []}


class _Overrides:
    def __init__(self, table: pa.Table, found: dict[Key, list]) -> None:
        self.table = table
        self.found = found


def _refs(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    planned: StagePlan,
    work: dict,
    stats: StageStats,
) -> tuple[list[ImageRef], _Overrides, set[Key]]:
    """What to infer: the missing vouched-for keys, and the values resolved here whose
    content is not cached; the resolved values' current hashes (an error: NULL)."""
    refs: dict[Key, ImageRef] = {}
    for row in work["missing"]:
        h = row["trusted"]
        signature = tuple(row[c] for c in SIGNATURE)
        refs[(h, "")] = ImageRef(
            (h, ""), row["img"]["path"], row["orientation"], None, Expected(signature, h)
        )
    images = [row["img"] for row in work["untrusted"]]
    current = resolve(con, images) if images else {}
    stats.checked = len(current)
    paths, claimed, hashes = [], [], []
    for (path, h), cur in current.items():
        if cur.error:
            report(settings, stats, cur.error, cur.path)
        paths.append(path)
        claimed.append(h)
        hashes.append(cur.hash)
    table = pa.table([paths, claimed, hashes], schema=OVERRIDES)
    plan, spec = planned.plan, planned.plan.spec
    keys = {(c.hash, ""): c for c in current.values() if c.hash}
    found: dict[Key, list] = {}
    if keys and settings.cache:
        wanted = pa.table({"hash": [h for h, _ in keys], "roi": [""] * len(keys)})
        found = cache.lookup(
            con, wanted, spec.name, spec.weights_hash(), plan.physical.key, stage.call.k
        )
    for key, cur in keys.items():
        if key not in found and key not in refs:
            refs[key] = ImageRef(key, cur.path, cur.orientation, None, cur.expected)
    overrides = _Overrides(table, found)
    return _renditions(con, plan.rendition or ORIGINAL, refs, overrides)


def _renditions(
    con: duckdb.DuckDBPyConnection,
    source: str,
    refs: dict[Key, ImageRef],
    overrides: _Overrides,
) -> tuple[list[ImageRef], _Overrides, set[Key]]:
    """Read a plan's rendition where the content has one; content changed since ingest has
    none yet: its original is read and its result not cached (it is not the plan's)."""
    uncacheable: set[Key] = set()
    if source == ORIGINAL or not refs:
        return list(refs.values()), overrides, uncacheable
    small = renditions_by_hash(con, {h for h, _ in refs}, source)
    out = []
    for key, ref in refs.items():
        if key[0] in small:
            out.append(ImageRef(key, small[key[0]], 1))  # renditions are stored upright
        else:
            uncacheable.add(key)
            out.append(ref)
    return out, overrides, uncacheable


def _fresh(found: dict[Key, list]) -> pa.Table:
    return pa.table(
        [pa.array([h for h, _ in found], pa.string()), pa.array(list(found.values()), TOPK)],
        schema=FRESH,
    )


def _view_sql(
    stage: Stage, model: str, cached: str | None, names: _Names, overrides: bool, fresh: bool
) -> str:
    """(path, claimed hash) -> value: vouched-for files by their hash, resolved values by
    their current hash; the result of that content from this query's inference or the
    cache (the smallest stored k that serves the call)."""
    value = stage.call.function.sql_value("r.topk", _literal(model))
    k = int(stage.call.k)
    rows = [f"SELECT hash, 0 AS k, topk FROM {names.fresh}"] if fresh else []
    if cached:
        rows.append(f"SELECT hash, k, list_slice(topk, 1, {k}) AS topk FROM ({cached})")
    none = f"SELECT NULL::VARCHAR AS hash, 0 AS k, NULL::{TOPK_SQL} AS topk WHERE false"
    r = " UNION ALL ".join(rows) or none
    parts = [
        f"SELECT w.path AS __path, w.hash AS __hash, {value} AS __v"
        f" FROM {names.verified} w LEFT JOIN r ON r.hash = w.hash"
    ]
    if overrides:
        parts.append(
            f"SELECT o.path, o.claimed, {value} FROM {names.overrides} o"
            " LEFT JOIN r ON r.hash = o.current"
        )
    return (
        f"WITH r AS (SELECT hash, arg_min(topk, k) AS topk FROM ({r}) GROUP BY hash) "
        + " UNION ALL ".join(parts)
    )


__all__ = ["applies", "run_stage"]
