"""Stored plan profiles and fitted cost models (``smolql.plan_profiles``, ``smolql.cost_models``),
read and written by column name."""

from __future__ import annotations

from typing import Any

import duckdb

from smolql.storage.schema import SCHEMA, fetch_one, insert

PROFILE_COLUMNS = (
    "plan", "model", "weights", "source", "scale", "input_size", "backend", "precision",
    "batch_size", "images", "correct", "accuracy", "accuracy_basis", "reference", "decode_ms",
    "resize_ms", "infer_ms", "bytes", "decoded_pixels", "measured_per_s", "predicted_per_s",
)  # fmt: skip


def replace_profiles(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    machine: str,
    profiles: list[dict[str, Any]],
    cost_model: str,
    max_error: float,
) -> None:
    """Replace a catalog's profiles and cost model on ``machine``, in one transaction."""
    con.execute("BEGIN")
    try:
        for table in ("plan_profiles", "cost_models"):
            con.execute(
                f"DELETE FROM {SCHEMA}.{table} WHERE catalog = ? AND machine = ?",
                [catalog, machine],
            )
        for row in profiles:
            unknown = set(row) - set(PROFILE_COLUMNS)
            if unknown:
                raise ValueError(f"not columns of plan_profiles: {sorted(unknown)}")
            insert(con, "plan_profiles", {"catalog": catalog, "machine": machine, **row},
                   now=("profiled",))  # fmt: skip
        insert(
            con,
            "cost_models",
            {"catalog": catalog, "machine": machine, "params": cost_model, "max_error": max_error},
            now=("fitted",),
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def profiles(con: duckdb.DuckDBPyConnection, catalog: str, machine: str) -> list[dict[str, Any]]:
    """A catalog's profiled plans on ``machine``, as column -> value."""
    cur = con.execute(
        f"SELECT {', '.join(PROFILE_COLUMNS)} FROM {SCHEMA}.plan_profiles"
        " WHERE catalog = ? AND machine = ? ORDER BY plan",
        [catalog, machine],
    )
    return [dict(zip(PROFILE_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def cost_model(con: duckdb.DuckDBPyConnection, catalog: str, machine: str) -> str | None:
    """The cost model (JSON) fitted by the catalog's latest profile on ``machine``."""
    row = fetch_one(
        con,
        f"SELECT params FROM {SCHEMA}.cost_models WHERE catalog = ? AND machine = ?"
        " ORDER BY fitted DESC LIMIT 1",
        [catalog, machine],
    )
    return row[0] if row else None
