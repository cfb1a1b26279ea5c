"""PEP 249 (DB-API 2.0) surface: cursors, type objects and constructors.

Cursors of one connection share its DuckDB connection, so ``commit()``/``rollback()`` act on
every cursor's work. DuckDB runs in autocommit mode until ``BEGIN``; ``commit()`` and
``rollback()`` end an explicit transaction and do nothing otherwise. ``paramstyle`` is
``qmark`` (``?`` with a sequence); ``:name`` with a mapping is accepted too.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from smolql.errors import InterfaceError, NotSupportedError, ProgrammingError
from smolql.sql.parse import split

if TYPE_CHECKING:
    from smolql.connection import Connection

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"
_DML = ("insert", "update", "delete")
_ROW_STATEMENTS = (
    "select", "with", "values", "from", "show", "describe", "pragma", "summarize", "table",
    "call", "(",
)  # fmt: skip


def _last_statement(operation: str) -> str:
    """The statement whose result a script returns (DuckDB SQL that sqlglot cannot tokenize
    counts as one statement)."""
    if ";" not in operation:
        return operation
    try:
        statements = split(operation)
    except Exception:
        return operation
    return statements[-1] if statements else ""


class DBAPITypeObject:
    """Compares equal to every type code of its group (PEP 249)."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.split("(")[0].split("[")[0] in self.names

    def __hash__(self) -> int:
        return hash(self.names)


STRING = DBAPITypeObject("VARCHAR")
BINARY = DBAPITypeObject("BLOB")
NUMBER = DBAPITypeObject(
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN",
)  # fmt: skip
DATETIME = DBAPITypeObject("DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "INTERVAL")
ROWID = DBAPITypeObject("ROWID")

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _dt.time:
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _dt.datetime:
    return Timestamp(*time.localtime(ticks)[:6])


def type_code(t: pa.DataType) -> str:
    """DuckDB's name for an Arrow type: the cursor's ``description`` type codes."""
    checks = [
        (pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int8, "TINYINT"),
        (pa.types.is_int16, "SMALLINT"), (pa.types.is_int32, "INTEGER"),
        (pa.types.is_int64, "BIGINT"), (pa.types.is_uint8, "UTINYINT"),
        (pa.types.is_uint16, "USMALLINT"), (pa.types.is_uint32, "UINTEGER"),
        (pa.types.is_uint64, "UBIGINT"), (pa.types.is_float32, "FLOAT"),
        (pa.types.is_float64, "DOUBLE"), (pa.types.is_decimal, "DECIMAL"),
        (pa.types.is_string, "VARCHAR"), (pa.types.is_large_string, "VARCHAR"),
        (pa.types.is_binary, "BLOB"), (pa.types.is_large_binary, "BLOB"),
        (pa.types.is_date, "DATE"), (pa.types.is_time, "TIME"),
        (pa.types.is_timestamp, "TIMESTAMP"), (pa.types.is_duration, "INTERVAL"),
        (pa.types.is_struct, "STRUCT"), (pa.types.is_list, "LIST"),
        (pa.types.is_large_list, "LIST"), (pa.types.is_map, "MAP"),
    ]  # fmt: skip
    return next((name for check, name in checks if check(t)), str(t).upper())


class Cursor:
    """A DB-API cursor over a SmolQL connection; SmolQL UDF queries work here too."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._closed = False
        self._table: pa.Table | None = None
        self._rows: list[tuple] | None = None
        self._pos = 0
        self.description: tuple | None = None
        self.rowcount = -1

    # -- running ---------------------------------------------------------------------------

    def execute(self, operation: str, parameters: Sequence[Any] | dict | None = None) -> Cursor:
        self._check()
        table = self.connection._run(operation, parameters)
        self._set_result(operation, table)
        return self

    def executemany(self, operation: str, seq_of_parameters) -> Cursor:
        self._check()
        total = 0
        for params in seq_of_parameters:
            self.execute(operation, params)
            total += max(self.rowcount, 0)
        self.rowcount = total
        self._set_result(operation, None)
        self.rowcount = total
        return self

    def callproc(self, procname: str, parameters=None):
        raise NotSupportedError("SmolQL (DuckDB) has no stored procedures")

    def setinputsizes(self, sizes) -> None:
        self._check()

    def setoutputsize(self, size, column=None) -> None:
        self._check()

    # -- fetching ----------------------------------------------------------------------------

    def fetchone(self) -> tuple | None:
        rows = self._result_rows()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        rows = self._result_rows()
        n = self.arraysize if size is None else size
        out = rows[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def fetchall(self) -> list[tuple]:
        rows = self._result_rows()
        out = rows[self._pos :]
        self._pos = len(rows)
        return out

    def fetch_arrow_table(self) -> pa.Table:
        self._result_rows()
        return self._table.slice(self._pos)

    def fetch_df(self):
        """The rest of the result as a pandas DataFrame (pandas is installed with SmolQL)."""
        try:
            import pandas  # noqa: F401
        except ImportError as e:
            raise NotSupportedError(
                "fetch_df() needs pandas, which is missing here: pip install pandas"
            ) from e
        return self.fetch_arrow_table().to_pandas()

    def fetch_record_batches(self, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        yield from self.fetch_arrow_table().to_batches(max_chunksize=batch_size)

    def __iter__(self) -> Iterator[tuple]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._closed = True
        self._table = self._rows = None

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _set_result(self, operation: str, table: pa.Table | None) -> None:
        self._pos, self._rows = 0, None
        words = _last_statement(operation).split(None, 2)
        first = words[0].lower() if words else ""
        if first == "explain":
            first = "select"
        if table is not None and first not in _ROW_STATEMENTS:
            # DuckDB answers DDL and DML with a one-row "Count" table: a count, not rows.
            counted = table.column_names == ["Count"] and table.num_rows == 1
            self.rowcount = int(table.column(0)[0].as_py()) if counted and first in _DML else -1
            table = None
        else:
            self.rowcount = table.num_rows if table is not None else -1
        self._table = table if table is not None and table.num_columns else None
        self.description = (
            None
            if self._table is None
            else tuple(
                (f.name, type_code(f.type), None, None, None, None, f.nullable)
                for f in self._table.schema
            )
        )

    def _result_rows(self) -> list[tuple]:
        self._check()
        if self._table is None:
            raise ProgrammingError("no result set: execute a query that returns rows first")
        if self._rows is None:
            names = self._table.column_names
            self._rows = [tuple(r[n] for n in names) for r in self._table.to_pylist()]
        return self._rows

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("cursor is closed")
        self.connection._check()
