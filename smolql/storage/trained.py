"""Models trained in this database (``smolql.trained_models``), by column name."""

from __future__ import annotations

from typing import Any

import duckdb

from smolql.storage.schema import SCHEMA, insert

COLUMNS = ("name", "base", "rendition", "weights", "catalog", "train_images", "epochs", "seconds")


def replace_trained(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> list[str]:
    """Store a trained model under its name; return the weights files it replaces."""
    old = [
        w
        for (w,) in con.execute(
            f"SELECT weights FROM {SCHEMA}.trained_models WHERE name = ?", [row["name"]]
        ).fetchall()
    ]
    con.execute(f"DELETE FROM {SCHEMA}.trained_models WHERE name = ?", [row["name"]])
    insert(con, "trained_models", row, now=("created",))
    return old


def trained(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cur = con.execute(f"SELECT {', '.join(COLUMNS)} FROM {SCHEMA}.trained_models ORDER BY name")
    return [dict(zip(COLUMNS, row, strict=True)) for row in cur.fetchall()]
