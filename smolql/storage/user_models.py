"""Users' own models stored in the database (``smolql.user_models``), by column name: the
model file itself (ONNX, or a torchvision state dict) travels with the database."""

from __future__ import annotations

from typing import Any

import duckdb

from smolql.storage.schema import SCHEMA, insert

COLUMNS = ("name", "onnx", "hash", "labels", "input_size", "resize", "mean", "std", "layout",
           "source", "arch", "weights")  # fmt: skip
BLOBS = ("onnx", "weights")


def replace_user_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Store a model under its name, replacing one of that name, in one transaction."""
    con.begin()
    try:
        con.execute(f"DELETE FROM {SCHEMA}.user_models WHERE name = ?", [row["name"]])
        insert(con, "user_models", row, now=("added",))
        con.commit()
    except BaseException:
        con.rollback()
        raise


def user_models(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every stored model's description, without its (large) files."""
    cols = tuple(c for c in COLUMNS if c not in BLOBS)
    rows = con.execute(f"SELECT {', '.join(cols)} FROM {SCHEMA}.user_models ORDER BY name")
    return [dict(zip(cols, r, strict=True)) for r in rows.fetchall()]


def user_model_files(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, bytes | None]:
    """One stored model's files (``onnx``, ``weights``; the one it does not use is None)."""
    row = con.execute(
        f"SELECT {', '.join(BLOBS)} FROM {SCHEMA}.user_models WHERE name = ?", [name]
    ).fetchone()
    return dict(zip(BLOBS, row or (None, None), strict=True))
