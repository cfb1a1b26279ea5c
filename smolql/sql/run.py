"""Run SQL on DuckDB, turning its errors into SmolQL errors with line and column."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from smolql.errors import ConstraintError, ExecutionError, ParseError, QueryError

_LINE = re.compile(r"^LINE (\d+): (.*)$")


def query_arrow(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict | None = None
) -> pa.Table:
    """Run SQL (several statements allowed) and return the last one's result as Arrow."""
    try:
        relation = con.sql(sql, params=params)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as e:
        raise sql_error(e) from e


def clear_name(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Free ``name`` of this connection's registered table, temporary view or temporary
    table (each blocks the others)."""
    con.unregister(name)
    try:
        con.execute(f"DROP VIEW IF EXISTS temp.{name}")
    except duckdb.CatalogException:  # a table of that name
        con.execute(f"DROP TABLE IF EXISTS temp.{name}")


def bound(tree: exp.Expression, values: dict) -> dict | None:
    """The parameters that ``tree`` uses (DuckDB rejects unused ones)."""
    names = {p.name for p in tree.find_all(exp.Placeholder) if p.name}
    missing = names - values.keys()
    if missing:
        raise QueryError(f"no value given for parameter(s) {', '.join(sorted(missing))}")
    return {n: values[n] for n in names} or None


def sql_error(e: duckdb.Error) -> ParseError | QueryError | ConstraintError | ExecutionError:
    """Map a DuckDB error to :class:`ParseError` (syntax) or :class:`QueryError` (the rest).

    DuckDB ends positioned messages with ``LINE n: <text>`` and a caret line; that becomes
    ``line``/``column`` and the ``context`` shown under the message.
    """
    text = str(e)
    lines = text.split("\n")
    line = column = None
    context = ""
    for i, item in enumerate(lines):
        m = _LINE.match(item)
        if m and i + 1 < len(lines):
            line = int(m.group(1))
            prefix = len(item) - len(m.group(2))
            caret = lines[i + 1]
            column = len(caret) - len(caret.lstrip(" ")) - prefix + 1
            context = f"  {m.group(2)}\n  {' ' * (column - 1)}{caret.strip()}"
            lines = lines[:i]
            break
    message = " ".join(x.strip() for x in lines if x.strip())  # one line, e.g. with candidates
    if isinstance(e, duckdb.ParserException):
        cls = ParseError
    elif isinstance(e, duckdb.ConstraintException):
        cls = ConstraintError
    elif isinstance(e, duckdb.OperationalError | duckdb.IOException | duckdb.OutOfMemoryException):
        cls = ExecutionError
    else:
        cls = QueryError
    err = cls(message, line=line, column=column)
    err.context = context
    return err
