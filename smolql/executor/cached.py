"""Run a stage with DuckDB doing the per-row work: a cached query without Python per image.

The general stage (:mod:`smolql.executor.stage`) brings every image value into Python. Here
DuckDB decides which values it can answer: a value whose path and hash are a catalog row of a
file that :data:`~smolql.watch.WATCHER` vouches for (signature verified, no change reported
since) is keyed by that hash. Only the rest come to Python: values not vouched for (resolved
by :func:`~smolql.freshness.resolve`, which stats or reads them, then vouches for them) and
keys the cache lacks (inferred). The stage's lookup table is a temporary table of the
driver's distinct (path, hash) keys and their values, read from the cache where they lie: a
later run of the same statement may reuse it while nothing it relies on changed
(:mod:`smolql.executor.prepared`).

It serves model functions with a SQL form of their value (``SqlFunction.sql_value``) called
on whole images; crops and LIMIT rounds take the general path.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from smolql.config import Settings
from smolql.freshness import Expected, resolve
from smolql.models.spec import TOPK
from smolql.ops.pipeline import ImageRef
from smolql.planner.physical import IN_DUCKDB, StagePlan
from smolql.planner.space import ORIGINAL
from smolql.sql.logical import IMAGE, Stage
from smolql.sql.run import bound, clear_name, sql_error
from smolql.storage.cache import literal, rows_sql
from smolql.storage.schema import TOPK_SQL, renditions_by_hash
from smolql.watch import WATCHER

from .stage import IMAGE_FIELDS, Key, StageStats, from_rendition, infer, report

SIGNATURE = ("bytes", "mtime_ns", "ctime_ns", "inode")
CHUNK = 8192  # image values resolved in Python at a time
OVERRIDES = pa.schema(
    [
        ("path", pa.string()),
        ("claimed", pa.string()),
        ("current", pa.string()),
        ("orientation", pa.int32()),
        *((c, pa.int64()) for c in SIGNATURE),
    ]
)
FRESH = pa.schema([("hash", pa.string()), ("topk", TOPK)])


def path(stage: Stage) -> str:
    """How ``stage`` meets its image values (a key of :data:`~smolql.planner.physical.PATHS`):
    here for a whole-image call of a function with a SQL value, else the general path."""
    if stage.call.roi is not None:
        return "crop"
    return IN_DUCKDB if stage.call.function.sql_value is not None else "function"


def run_stage(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    planned: StagePlan,
    values: dict | None = None,
) -> StageStats | None:
    """Evaluate ``stage`` and create its lookup table (``stage.table``); None when its image
    argument is not an image value with text path and hash (the general path says why)."""
    start = time.perf_counter()
    plan = planned.plan
    names = _Names(stage.table)
    with _matched(con, settings, stage, planned, values, names) as m:
        if m is None:
            return None
        stats = StageStats(ran=tuple(planned.lines()), model=plan.spec.name)
        stats.driver_rows, stats.cached = m.rows, m.keys - m.missing
        refs: dict[Key, ImageRef] = {}
        if m.missing:  # vouched for but not cached
            _add_refs(refs, _rows(con, _missing_sql(names.joined)))
        if m.untrusted:  # brought here in chunks: stat'ed, read where changed, then vouched for
            cached, lacking = _resolve_untrusted(con, settings, names, m.cached, stats)
            stats.cached += cached
            _add_refs(refs, lacking)
        todo, uncacheable = _renditions(con, plan.rendition or ORIGINAL, refs)
        found = infer(con, settings, stage, plan, todo, uncacheable, stats)
        if found:
            con.register(names.fresh, _fresh(found))
        view = _view_sql(stage, plan.spec.name, m.cached, names, bool(m.untrusted), bool(found))
        clear_name(con, stage.table)
        _create(con, stage.table, view, None)
    stats.reusable = not m.untrusted and not stats.errors
    stats.seconds = time.perf_counter() - start
    return stats


def count_cached(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    planned: StagePlan,
    values: dict | None = None,
) -> tuple[int, int] | None:
    """For EXPLAIN: the driver's rows and how many of its contents the cache answers, counted
    as a run would (vouched-for files in DuckDB; only the others are stat'ed, without
    warnings); None where this path does not apply."""
    names = _Names("__smolql_rexplain")
    with _matched(con, settings, stage, planned, values, names) as m:
        if m is None:
            return None
        count = m.keys - m.missing
        if m.untrusted and m.cached:
            count += _resolve_untrusted(con, settings, names, m.cached, StageStats(), False)[0]
        return m.rows, count


@dataclass(frozen=True)
class _Matched:
    """The driver's image values matched to the files vouched for and to the cache."""

    cached: str | None  # the SQL of the cache rows that serve the call (None: cache off)
    rows: int  # the driver's rows
    keys: int  # distinct contents of files vouched for
    untrusted: int  # values not vouched for
    missing: int  # contents vouched for that the cache lacks


@contextlib.contextmanager
def _matched(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    planned: StagePlan,
    values: dict | None,
    names: _Names,
) -> Iterator[_Matched | None]:
    """Match the driver's image values (working table ``names.joined``, against one snapshot
    of the files vouched for) and count them; None when the image argument is not an image
    value with text path and hash. The working tables are dropped afterwards."""
    driver = stage.driver.sql("duckdb")
    params = bound(stage.driver, values or {})
    if not _image_typed(con, driver, params):
        yield None
        return
    con.register(names.verified, WATCHER.verified())
    try:
        cached = _cached_sql(stage, planned, settings)
        _create(con, names.joined, _joined_sql(driver, names, cached), params)
        yield _Matched(cached, *_one_row(con, _counts_sql(names.joined), None))
    finally:
        for name in (names.verified, names.overrides, names.fresh):  # registered, if at all
            con.unregister(name)
        con.execute(f"DROP TABLE IF EXISTS temp.{names.joined}")


def _resolve_untrusted(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    names: _Names,
    cached: str | None,
    stats: StageStats,
    warn: bool = True,
) -> tuple[int, pa.Table]:
    """Resolve the values not vouched for (table ``names.overrides``): how many of their
    contents the cache holds, and those it lacks (with what reading needs)."""
    overrides = _resolve(con, settings, _untrusted_sql(names.joined), stats, warn)
    con.register(names.overrides, overrides)
    resolved, lacking = _overrides_lacking(con, names, cached)
    return resolved - lacking.num_rows, lacking


class _Names:
    """Names of the stage's working tables, beside its lookup table's (``__smolql_r...``)."""

    def __init__(self, table: str) -> None:
        tail = table.removeprefix("__smolql_r")
        self.verified = f"__smolql_v{tail}"
        self.overrides = f"__smolql_o{tail}"
        self.fresh = f"__smolql_f{tail}"
        self.joined = f"__smolql_j{tail}"


def _create(con: duckdb.DuckDBPyConnection, name: str, sql: str, params: dict | None) -> None:
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}", params)
    except duckdb.Error as e:
        raise sql_error(e) from e


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
    spec = planned.plan.spec
    return rows_sql(spec.name, spec.weights_hash(), planned.plan.physical.key, stage.call.k)


def _joined_sql(driver: str, names: _Names, cached: str | None) -> str:
    """The driver's rows, each with the file vouched for at its path and hash (if any) and
    whether the cache holds that content's result. The join is on the watcher's integer key;
    the path and hash are then compared, so a key collision only leaves a value unvouched."""
    same = f"w.path = d.{IMAGE}.path AND w.hash = d.{IMAGE}.hash"
    fields = ", ".join(
        f"CASE WHEN {same} THEN w.{c} END AS {c}" for c in ("orientation", *SIGNATURE)
    )
    hits = f"(SELECT DISTINCT hash FROM ({cached}))" if cached else "(SELECT NULL AS hash)"
    return (
        f"WITH m AS (SELECT d.{IMAGE} AS img, CASE WHEN {same} THEN w.hash END AS trusted,"
        f" {fields} FROM ({driver}) d LEFT JOIN {names.verified} w"
        f" ON w.key = hash(d.{IMAGE}.path, d.{IMAGE}.hash))"
        f" SELECT m.*, c.hash IS NOT NULL AS hit FROM m LEFT JOIN {hits} c"
        " ON c.hash = m.trusted"
    )


def _counts_sql(joined: str) -> str:
    """Rows; vouched-for keys; values not vouched for; vouched-for keys not cached."""
    return (
        "SELECT count(*), count(DISTINCT trusted),"
        " count(*) FILTER (WHERE trusted IS NULL AND img IS NOT NULL),"
        f" count(DISTINCT trusted) FILTER (WHERE trusted IS NOT NULL AND NOT hit) FROM {joined}"
    )


def _missing_sql(joined: str) -> str:
    columns = ", ".join(f"any_value({c}) AS {c}" for c in ("orientation", *SIGNATURE))
    return (
        f"SELECT trusted AS hash, any_value(img.path) AS path, {columns} FROM {joined}"
        " WHERE trusted IS NOT NULL AND NOT hit GROUP BY trusted"
    )


def _untrusted_sql(joined: str) -> str:
    return f"SELECT img FROM {joined} WHERE trusted IS NULL AND img IS NOT NULL"


def _one_row(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None) -> tuple:
    try:
        return tuple(v or 0 for v in con.execute(sql, params).fetchall()[0])
    except duckdb.Error as e:
        raise sql_error(e) from e


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> pa.Table:
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as e:
        raise sql_error(e) from e


def _resolve(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    sql: str,
    stats: StageStats,
    warn: bool = True,
) -> pa.Table:
    """The values not vouched for, resolved :data:`CHUNK` at a time against the files (which
    :func:`resolve` then vouches for): per (path, claimed hash), the current hash (NULL:
    unreadable, reported) and what reading that content needs."""
    values = _rows(con, sql).column(0)  # Arrow: compact; Python objects per chunk only
    parts = []
    for batch in (values.slice(i, CHUNK) for i in range(0, len(values), CHUNK)):
        current = resolve(con, (img for img in batch.to_pylist()))
        stats.checked += len(current)
        rows = []
        for (path, claimed), cur in current.items():
            if cur.error and warn:
                report(settings, stats, cur.error, cur.path)
            signature = cur.expected.signature if cur.expected else (None,) * 4
            rows.append((path, claimed, cur.hash, cur.orientation, *signature))
        if rows:
            columns = zip(*rows, strict=True)
            parts.append(
                pa.Table.from_arrays(
                    [pa.array(c, f.type) for c, f in zip(columns, OVERRIDES, strict=True)],
                    schema=OVERRIDES,
                )
            )
    return pa.concat_tables(parts) if parts else OVERRIDES.empty_table()


def _overrides_lacking(
    con: duckdb.DuckDBPyConnection, names: _Names, cached: str | None
) -> tuple[int, pa.Table]:
    """The resolved contents' number, and those the cache lacks (with what reading needs)."""
    resolved = _one_row(con, f"SELECT count(DISTINCT current) FROM {names.overrides}", None)[0]
    hit = f"AND NOT EXISTS (SELECT 1 FROM ({cached}) c WHERE c.hash = o.current)" if cached else ""
    columns = ", ".join(f"any_value({c}) AS {c}" for c in ("path", "orientation", *SIGNATURE))
    lacking = _rows(
        con,
        f"SELECT current AS hash, {columns} FROM {names.overrides} o"
        f" WHERE current IS NOT NULL {hit} GROUP BY current",
    )
    return resolved, lacking


def _add_refs(refs: dict[Key, ImageRef], rows: pa.Table) -> None:
    """How to read each content: its path, orientation and the signature it was seen with."""
    for row in rows.to_pylist():
        key = (row["hash"], "")
        if key not in refs:
            signature = tuple(row[c] for c in SIGNATURE)
            expect = Expected(signature, row["hash"]) if None not in signature else None
            refs[key] = ImageRef(key, row["path"], row["orientation"], None, expect)


def _renditions(
    con: duckdb.DuckDBPyConnection, source: str, refs: dict[Key, ImageRef]
) -> tuple[list[ImageRef], set[Key]]:
    """What to read for each ref under a plan reading ``source`` (see
    :func:`~smolql.executor.stage.from_rendition`), and the keys not to cache."""
    uncacheable: set[Key] = set()
    if source == ORIGINAL or not refs:
        return list(refs.values()), uncacheable
    small = renditions_by_hash(con, {h for h, _ in refs}, source)
    return [from_rendition(ref, small, uncacheable) for ref in refs.values()], uncacheable


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
    value = stage.call.function.sql_value("r.topk", literal(model))
    k = int(stage.call.k)
    rows = [f"SELECT hash, 0 AS k, topk FROM {names.fresh}"] if fresh else []
    if cached:
        rows.append(f"SELECT hash, k, list_slice(topk, 1, {k}) AS topk FROM ({cached})")
    none = f"SELECT NULL::VARCHAR AS hash, 0 AS k, NULL::{TOPK_SQL} AS topk WHERE false"
    r = " UNION ALL ".join(rows) or none
    parts = [
        f"SELECT w.path AS __path, w.hash AS __hash, {value} AS __v FROM (SELECT DISTINCT"
        f" img.path AS path, trusted AS hash FROM {names.joined} WHERE trusted IS NOT NULL) w"
        " LEFT JOIN r ON r.hash = w.hash"
    ]
    if overrides:
        parts.append(  # values of several catalogs may share a (path, hash): one row each
            f"SELECT o.path, o.claimed, {value} FROM (SELECT path, claimed,"
            f" any_value(current) AS current FROM {names.overrides} GROUP BY path, claimed) o"
            " LEFT JOIN r ON r.hash = o.current"
        )
    return (
        f"WITH r AS (SELECT hash, arg_min(topk, k) AS topk FROM ({r}) GROUP BY hash) "
        + " UNION ALL ".join(parts)
    )


__all__ = ["count_cached", "path", "run_stage"]
