"""The UDF result cache: outputs stored in the database, keyed by content hash, model and
weights version, plan (backend/precision/input/decode) and region. Changed file content has a
new hash, so it misses; ``SET smolql.cache = off`` bypasses the cache; a database opened
read-only is read, never written."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from smolql.models.spec import TOPK
from smolql.storage.schema import SCHEMA, is_read_only


def lookup(
    cur: duckdb.DuckDBPyConnection, keys: pa.Table, model: str, weights: str, plan: str, k: int
) -> dict[tuple[str, str], list]:
    """Cached top-k lists for ``keys`` (columns hash, roi) with at least ``k`` classes."""
    cur.register("__smolql_keys", keys)
    try:
        rows = cur.execute(
            f"SELECT c.hash, c.roi, c.topk FROM {SCHEMA}.udf_cache c"
            " JOIN __smolql_keys q ON q.hash = c.hash AND q.roi = c.roi"
            " WHERE c.model = ? AND c.weights = ? AND c.plan = ? AND c.k >= ?",
            [model, weights, plan, k],
        ).fetchall()
    finally:
        cur.unregister("__smolql_keys")
    return {(h, r): t[:k] for h, r, t in rows}


def rows_sql(model: str, weights: str, plan: str, k: int) -> str:
    """The cache rows (hash, k, topk) that serve a whole-image call with ``k`` classes, as SQL
    a query or view embeds (literals, not parameters: a view cannot hold parameters)."""
    return (
        f"SELECT hash, k, topk FROM {SCHEMA}.udf_cache WHERE model = {literal(model)}"
        f" AND weights = {literal(weights)} AND plan = {literal(plan)} AND roi = ''"
        f" AND k >= {int(k)}"
    )


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def store(
    cur: duckdb.DuckDBPyConnection,
    rows: list[tuple[str, str, list]],
    model: str,
    weights: str,
    plan: str,
    k: int,
) -> None:
    if not rows or is_read_only(cur):  # read-only: the answers are given, not kept
        return
    table = pa.table(
        {
            "hash": [h for h, _, _ in rows],
            "roi": [r for _, r, _ in rows],
            "topk": pa.array([t for _, _, t in rows], TOPK),
        }
    )
    cur.register("__smolql_new", table)
    try:
        cur.execute(
            f"INSERT INTO {SCHEMA}.udf_cache SELECT hash, ?, ?, ?, roi, ?, topk, now()"
            " FROM __smolql_new",
            [model, weights, plan, k],
        )
    finally:
        cur.unregister("__smolql_new")
