"""Render query results: a boxed table for terminals, or CSV, JSON and Parquet files."""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import date, datetime
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")
MAX_CELL = 48
IMAGE_KEYS = {"catalog", "id", "path", "hash"}


def cell_text(value: Any, max_cell: int | None = MAX_CELL, single: bool = False) -> str:
    r"""How one value reads in a table: images by catalog and id, numbers as DuckDB's own
    shell prints them (shortest round-trip form; ``single`` for FLOAT columns).

    >>> cell_text({'catalog': 'photos', 'id': 3, 'path': '/a.jpg', 'hash': 'ab'})
    'image(photos#3)'
    >>> cell_text(6696.0), cell_text(0.953), cell_text(1e-7), cell_text(None)
    ('6696.0', '0.953', '1e-07', 'NULL')
    >>> cell_text(0.10000000149011612, single=True), cell_text(b"a\x00")
    ('0.1', 'a\\x00')
    """
    if value is None:
        return "NULL"
    if isinstance(value, dict) and value.keys() >= IMAGE_KEYS:
        return f"image({value['catalog']}#{value['id']})"
    if isinstance(value, float):
        return str(np.float32(value)) if single else repr(value)
    if isinstance(value, bytes):
        return blob_text(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {cell_text(v, None)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(cell_text(v, None) for v in value) + "]"
    text = str(value)
    if max_cell is None or width(text) <= max_cell:
        return text
    while width(text) > max_cell - 1:
        text = text[:-1]
    return text + "…"


def blob_text(value: bytes) -> str:
    """A BLOB as DuckDB writes it: printable ASCII as is, other bytes as ``\\xNN``."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in value)


def width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _pad(text: str, size: int, right: bool) -> str:
    fill = " " * (size - width(text))
    return fill + text if right else text + fill


def format_table(
    table: pa.Table, max_rows: int | None = None, max_cell: int | None = MAX_CELL
) -> str:
    """A boxed text table with a row count footer (nothing for a result without columns,
    such as a CREATE TABLE's)."""
    names = table.column_names
    if not names or (names == ["Count"] and not table.num_rows):  # DuckDB's answer to DDL
        return ""
    rows = table.slice(0, max_rows).to_pylist() if max_rows else table.to_pylist()
    singles = [pa.types.is_float32(t) for t in table.schema.types]
    cells = [
        [cell_text(r[n], max_cell, single) for n, single in zip(names, singles, strict=True)]
        for r in rows
    ]
    widths = [max([width(n)] + [width(c[i]) for c in cells]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]

    def line(values: list[str]) -> str:
        parts = [_pad(v, w, num) for v, w, num in zip(values, widths, numeric, strict=True)]
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
    table: pa.Table, fmt: str, output: str | None, stdout: IO[str] | None = None
) -> None:
    """Write ``table`` as ``fmt`` to ``output`` (a path) or to ``stdout`` (default: the
    ``sys.stdout`` of the moment, so that a redirection made after import is honoured)."""
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
        text = format_table(table)
        text = text + "\n" if text else ""
    if output is None:
        (stdout or sys.stdout).write(text)
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
    if isinstance(value, bytes):
        return blob_text(value)
    return str(value)
