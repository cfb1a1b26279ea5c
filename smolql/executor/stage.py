"""Run one UDF stage: the pre-filter's image values -> the content at their paths now ->
cached or fresh results -> the stage's lookup table.

Results are keyed by the content actually there (:mod:`smolql.freshness`) and by the pixel
region decoded, never by the hash an image value claims: a changed, deleted or hand-built
image value can neither be answered from another content's cache entry nor write under one.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from smolql.config import Settings
from smolql.errors import DecodeError, QueryError
from smolql.executor.base import NODE, SECONDS, where
from smolql.executor.registry import get_executor
from smolql.freshness import Current, resolve
from smolql.ops.pipeline import ImageRef
from smolql.ops.transform import Rect
from smolql.planner.physical import Plan, StagePlan, warn_if_uncalibrated
from smolql.planner.space import ORIGINAL
from smolql.regions import InvalidBox, region
from smolql.sql.calls import BOX_ARGS, error
from smolql.sql.logical import IMAGE, Stage, roi_names
from smolql.sql.run import bound, sql_error
from smolql.storage import cache
from smolql.storage.schema import renditions_by_hash

IMAGE_FIELDS = {"catalog", "id", "path", "hash"}
DONE_TABLE = "__smolql_chunk"  # the image ids a LIMIT query evaluates in this round

Key = tuple[str, str]  # content hash, decoded region


class ImageWarning(UserWarning):
    """An image could not be classified (unreadable, changed to garbage, deleted, or an
    invalid crop box); its UDF result is NULL."""


@dataclass
class StageStats:
    driver_rows: int = 0
    cached: int = 0
    inferred: int = 0
    errors: int = 0
    seconds: float = 0.0
    ran: tuple[str, ...] = ()  # the plan the executor ran, as EXPLAIN prints it
    model: str | None = None  # the model it ran
    nodes: dict[str, tuple[int, float]] = field(default_factory=dict)  # images, busy seconds
    checked: int = 0  # image values whose file was stat'ed (or read) to know its content
    reusable: bool = False  # its lookup table stays right while no file it read changes
    reused: bool = False  # the lookup table of an earlier run, nothing having changed since

    def on_node(self, batch: pa.RecordBatch) -> None:
        """Count a result batch for the node its metadata names."""
        meta = batch.schema.metadata or {}
        if NODE in meta:
            node = meta[NODE].decode()
            images, busy = self.nodes.get(node, (0, 0.0))
            self.nodes[node] = (images + batch.num_rows, busy + float(meta.get(SECONDS, b"0")))

    def add(self, later: StageStats) -> StageStats:
        """Totals over the rounds of a LIMIT query (each round reads new images only)."""
        return StageStats(
            self.driver_rows + later.driver_rows,
            self.cached + later.cached,
            self.inferred + later.inferred,
            self.errors + later.errors,
            self.seconds + later.seconds,
            later.ran,
            later.model,
            {n: _plus(self.nodes.get(n), later.nodes.get(n)) for n in {*self.nodes, *later.nodes}},
            self.checked + later.checked,
        )


def _plus(a: tuple[int, float] | None, b: tuple[int, float] | None) -> tuple[int, float]:
    a, b = a or (0, 0.0), b or (0, 0.0)
    return a[0] + b[0], a[1] + b[1]


@dataclass
class _Work:
    """One stage's images: the driver rows' image values, per row its key (None: NULL
    result), and one ref per key."""

    images: list[dict | None]
    keys: list[Key | None]
    refs: dict[Key, ImageRef]
    uncacheable: set[Key]


def run_stage(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    planned: StagePlan,
    *,
    restrict: bool = False,
    values: dict | None = None,
) -> tuple[StageStats, pa.Table]:
    """Evaluate ``stage`` with its plan (only the images in ``DONE_TABLE`` when ``restrict``);
    return its statistics and lookup table (``__path, __hash, __roi*, __v``)."""
    start = time.perf_counter()
    driver = driver_rows(con, stage, restrict, values)
    stats = StageStats(
        driver_rows=driver.num_rows, ran=tuple(planned.lines()), model=planned.plan.spec.name
    )
    plan = planned.plan
    work = _work(con, settings, stage, driver, plan.rendition or ORIGINAL, stats)
    found = _evaluate(con, settings, stage, plan, work, stats)
    table = _lookup_table(driver, work, found, stage, plan.spec.name)
    stats.seconds = time.perf_counter() - start
    return stats, table


def driver_rows(
    con: duckdb.DuckDBPyConnection, stage: Stage, restrict: bool, values: dict | None
) -> pa.Table:
    """The pre-filter's distinct image values and crop arguments, type-checked."""
    sql = stage.driver.sql("duckdb")
    if restrict:
        sql = f"SELECT * FROM ({sql}) WHERE ({IMAGE}).id IN (SELECT id FROM {DONE_TABLE})"
    try:
        table = con.sql(sql, params=bound(stage.driver, values or {})).to_arrow_table()
    except duckdb.Error as e:
        raise sql_error(e) from e
    kind = table.schema.field(IMAGE).type
    if not (pa.types.is_struct(kind) and {f.name for f in kind} >= IMAGE_FIELDS):
        raise _not_an_image(stage, kind)
    for i, (name, arg) in enumerate(
        zip(roi_names(len(stage.call.roi or ())), stage.call.roi or (), strict=True)
    ):
        t = table.schema.field(name).type
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_decimal(t)
            or pa.types.is_null(t)
        ):
            raise error(f"crop(): argument {BOX_ARGS[i % 4]} must be a number, not {t}", arg)
    return table


def _not_an_image(stage: Stage, kind: object) -> QueryError:
    """The argument given as the image is no image value."""
    return QueryError(
        f"{stage.call.kind}() takes an image (a catalog's image column, or crop(image, ...)),"
        f" not {kind}"
    )


def _work(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    driver: pa.Table,
    source: str,
    stats: StageStats,
) -> _Work:
    images = driver.column(IMAGE).to_pylist()
    names = roi_names(len(stage.call.roi or ()))
    boxes = list(zip(*(driver.column(n).to_pylist() for n in names), strict=True)) if names else []
    current = resolve(con, (img for img in images if img is not None))
    stats.checked = len(current)
    small = None
    if source != ORIGINAL:
        small = renditions_by_hash(con, {c.hash for c in current.values() if c.hash}, source)
    work = _Work(images, [], {}, set())
    for i, img in enumerate(images):
        key = None
        if img is not None:
            cur = current[(img["path"], img["hash"])]
            keyed = _key(cur, boxes[i] if names else None, settings, stats)
            if keyed is not None:
                key, rect = keyed
                if key not in work.refs:
                    work.refs[key] = _ref(key, cur, rect, small, work)
        work.keys.append(key)
    return work


def _key(
    cur: Current, box, settings: Settings, stats: StageStats
) -> tuple[Key, Rect | None] | None:
    """The content and region a row needs, and the region as pixels; None for a NULL result
    (with a warning when the file or the box is invalid)."""
    if cur.error:
        report(settings, stats, cur.error, cur.path)
        return None
    rect = None
    if box is not None:
        try:
            rect = region(box)
        except InvalidBox as e:
            report(settings, stats, f"{cur.path}: {e}", cur.path)
            return None
        if rect is None:
            return None  # a NULL crop argument: NULL, like any SQL function
    return (cur.hash, ",".join(map(str, rect.as_tuple())) if rect else ""), rect


def _ref(
    key: Key, cur: Current, rect: Rect | None, small: dict[str, str] | None, work: _Work
) -> ImageRef:
    """How to read one key's pixels: its rendition (when the plan reads renditions and the
    content has one), else the original file."""
    original = ImageRef(key, cur.path, cur.orientation, rect, cur.expected)
    if rect is None and small is not None:
        return from_rendition(original, small, work.uncacheable)
    return original


def from_rendition(ref: ImageRef, small: dict[str, str], uncacheable: set[Key]) -> ImageRef:
    """``ref``'s content read from its rendition (``small``: file per content hash); content
    changed since ingest has none yet: the original is read, its result not cached (it is
    not the plan's)."""
    if ref.key[0] in small:
        return ImageRef(ref.key, small[ref.key[0]], 1)  # renditions are stored upright
    uncacheable.add(ref.key)
    return ref


def report(settings: Settings, stats: StageStats, message: str, path: str) -> None:
    """One image without a result: a warning and NULL, or the query fails (``on_error``)."""
    stats.errors += 1
    if settings.on_error == "fail":
        _, _, reason = message.partition(": ")
        raise DecodeError(f"cannot classify image: {reason or message}", file=path)
    warnings.warn(message, ImageWarning, stacklevel=2)


def _evaluate(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    plan: Plan,
    work: _Work,
    stats: StageStats,
) -> dict[Key, list]:
    """Top-k lists per key: from the cache, else inferred (and then cached)."""
    call, spec = stage.call, plan.spec
    found: dict[Key, list] = {}
    if settings.cache and work.refs:
        keys = pa.table({"hash": [h for h, _ in work.refs], "roi": [r for _, r in work.refs]})
        found = cache.lookup(con, keys, spec.name, spec.weights_hash(), plan.physical.key, call.k)
    stats.cached = len(found)
    todo = [ref for key, ref in work.refs.items() if key not in found]
    found.update(infer(con, settings, stage, plan, todo, work.uncacheable, stats))
    return found


def infer(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    stage: Stage,
    plan: Plan,
    todo: list[ImageRef],
    uncacheable: set[Key],
    stats: StageStats,
) -> dict[Key, list]:
    """Run the plan's inference on ``todo``; return each key's top-k list (none for an image
    that failed, reported) and store them in the cache (all but ``uncacheable`` keys)."""
    call, spec = stage.call, plan.spec
    found: dict[Key, list] = {}
    fresh: list[tuple[str, str, list]] = []
    executor = get_executor(settings.executor)
    if todo:
        warn_if_uncalibrated(plan)
    batches = executor.run(plan, todo, k=call.k, **where(executor.run, settings.ray_address))
    for batch in batches if todo else ():
        stats.on_node(batch)
        for index, topk, err, digest in zip(*batch.to_pydict().values(), strict=True):
            ref = todo[index]
            if err:
                report(settings, stats, err, err.partition(": ")[0])
                continue
            found[ref.key] = topk
            if ref.key not in uncacheable:
                # Stored under the hash of the bytes decoded (they may have changed mid-query).
                fresh.append((digest or ref.key[0], ref.key[1], topk))
    stats.inferred = len(todo)
    if settings.cache:
        cache.store(con, fresh, spec.name, spec.weights_hash(), plan.physical.key, call.k)
    return found


def _text(img: dict | None, field: str) -> str | None:
    value = img[field] if img is not None else None
    return None if value is None else str(value)


def _lookup_table(
    driver: pa.Table, work: _Work, found: dict[Key, list], stage: Stage, model: str
) -> pa.Table:
    """One row per distinct lookup key of the driver rows: the image value's path and hash,
    the crop arguments as given (so that the final query's lookup matches them exactly), and
    the UDF value. Values that differ only in catalog or id (two catalogs of one folder) share
    a row: the final query's lookup may find one row only."""
    fn = stage.call.function
    names = roi_names(len(stage.call.roi or ()))
    boxes = zip(*(driver.column(n).to_pylist() for n in names), strict=True) if names else None
    seen, rows, values = set(), [], []
    for i, (img, key) in enumerate(zip(work.images, work.keys, strict=True)):
        lookup = (_text(img, "path"), _text(img, "hash"), *(next(boxes) if boxes else ()))
        if lookup in seen:
            continue
        seen.add(lookup)
        rows.append(i)
        topk = found.get(key) if key is not None else None
        items = [{**t, "model": model} for t in topk] if topk is not None else None
        values.append(None if items is None else fn.value(items))
    picked = driver.take(pa.array(rows, pa.int64())) if names else None
    columns = {
        name: pa.array([_text(work.images[i], field) for i in rows], pa.string())
        for name, field in (("__path", "path"), ("__hash", "hash"))
    }
    for name in names:
        columns[name] = picked.column(name)
    columns["__v"] = pa.array(values, fn.result)
    return pa.table(columns)
