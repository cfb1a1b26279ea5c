"""Render query results: a boxed table for terminals, or CSV, JSON and Parquet files."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")
MAX_CELL = 48
IMAGE_KEYS = {"catalog", "id", "path", "hash"}


def cell_text(value: Any) -> str:
    """How one value reads in a table: images by catalog and id, floats to 4 places.

    >>> cell_text({'catalog': 'photos', 'id': 3, 'path': '/a.jpg', 'hash': 'ab'})
    'image(photos#3)'
    >>> cell_text(0.123456), cell_text(None)
    ('0.1235', 'NULL')
    """
    if value is None:
        return "NULL"
    if isinstance(value, dict) and value.keys() >= IMAGE_KEYS:
        return f"image({value['catalog']}#{value['id']})"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {cell_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(cell_text(v) for v in value) + "]"
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(table: pa.Table, max_rows: int | None = None) -> str:
    """A boxed text table with a row count footer."""
    names = table.column_names
    rows = table.slice(0, max_rows).to_pylist() if max_rows else table.to_pylist()
    cells = [[cell_text(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "│ " + " │ ".join(parts) + " │"

    rule = "─┼─".join("─" * w for w in widths)
    out = [
        "┌─" + "─┬─".join("─" * w for w in widths) + "─┐",
        line(names),
        "├─" + rule + "─┤",
        *(line(c) for c in cells),
        "└─" + "─┴─".join("─" * w for w in widths) + "─┘",
    ]
    shown = len(rows)
    more = f", {table.num_rows - shown} not shown" if shown < table.num_rows else ""
    out.append(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}{more}")
    return "\n".join(out)


def write_result(
    table: pa.Table, fmt: str, output: str | None, stdout: IO[str] = sys.stdout
) -> None:
    """Write ``table`` as ``fmt`` to ``output`` (a path) or to ``stdout``."""
    if fmt == "parquet":
        if output is None:
            raise ValueError("--format parquet needs --output FILE")
        pq.write_table(table, output)
        return
    if fmt == "csv":
        text = _csv(table)
    elif fmt == "json":
        text = json.dumps(table.to_pylist(), default=_json_default, indent=1) + "\n"
    elif table.column_names == ["plan"]:
        text = "\n".join(map(str, table.column("plan").to_pylist())) + "\n"  # EXPLAIN, readable
    else:
        text = format_table(table) + "\n"
    if output is None:
        stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)


def _csv(table: pa.Table) -> str:
    # CSV has no nested values: structs and lists are written as JSON text.
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            column = pa.array(
                [
                    None if v is None else json.dumps(v, default=_json_default)
                    for v in column.to_pylist()
                ],
                pa.string(),
            )
        columns.append(column)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns, names=table.column_names), sink)
    return sink.getvalue().to_pybytes().decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
