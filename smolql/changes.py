"""Whether anything a reused query plan relies on may have changed since it was stamped.

Two witnesses, read in microseconds: a count of the writes this process made through SmolQL
(every statement that is not a UDF query, every catalog, model or profile change: they call
:func:`bump`), and the database file's signature with its write-ahead log's, which every
committed write to a stored table changes, whoever made it (a raw DuckDB handle included;
another process cannot write while this one has the file open). What neither witnesses (a
database in memory, temporary tables and views, files and other databases a statement reads)
:func:`unwitnessed` names, and a statement that reads it never reuses its stage tables. One
change is still unseen: a temporary table made through the raw handle after a run, hiding a
stored table the statement reads (documented in the README).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

_lock = threading.Lock()
_writes = 0


def bump() -> None:
    """Count a write made through SmolQL (call after it, or before it starts: either is safe)."""
    global _writes
    with _lock:
        _writes += 1


def writes() -> int:
    """The writes counted so far in this process."""
    return _writes


@dataclass(frozen=True)
class Stamp:
    writes: int
    files: tuple


def stamp(database: str | None) -> Stamp:
    """The witnesses now, for the database file ``database`` (None: one in memory, the count
    alone)."""
    files: tuple = ()
    if database is not None:
        files = tuple(_signature(p) for p in (database, database + ".wal"))
    return Stamp(_writes, files)


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


OWN_PREFIX = "__smolql_"  # SmolQL's own stage and working tables (dropped with the statement)
_DEPTH = 8  # views within views followed at most this deep


def unwitnessed(tree: exp.Expression, relations: tuple[str, list[tuple]] | None) -> str:
    """Why a change to what ``tree`` reads might leave no trace in :func:`stamp` ('' when
    every relation it reads, through its views too, is a stored table of the database file);
    ``relations``: the database's name and the tables and views it sees
    (:func:`smolql.storage.catalogs.relations`), None for a database in memory:

    * a database in memory has no file to witness a write through the raw DuckDB handle;
    * a temporary table or view (a registered data frame included), a table function or file
      read (``read_csv(...)``, ``'pics.parquet'``), a Python variable DuckDB scans by name, or
      a table of another attached database can change without touching the file.

    Read once, when a statement is planned."""
    if relations is None:
        return "the database is in memory (a write through the raw DuckDB handle leaves no trace)"
    ours, rows = relations
    by_name: dict[str, list[tuple]] = {}
    for row in rows:
        by_name.setdefault(row[2].lower(), []).append(row)
    return _reads(tree, ours, by_name, _DEPTH)


def _reads(tree: exp.Expression, ours: str, relations: dict[str, list[tuple]], depth: int) -> str:
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            if isinstance(table.this, exp.GenerateSeries):
                continue  # range(...), generate_series(...): the same rows every time
            return f"it reads {table.sql('duckdb')}, outside the database"
        name = table.name.lower()
        if name.startswith(OWN_PREFIX) or (name in ctes and not table.db):
            continue
        found = _resolve(table, name, ours, relations)
        if found is None:
            return f"it reads {table.sql('duckdb')}, which is no table of the database"
        db, _, _, temporary, view = found
        if temporary:
            return f"it reads the temporary {'view' if view else 'table'} {table.name}"
        if db != ours:
            return f"it reads {table.sql('duckdb')} of the attached database {db}"
        if view and depth > 0:
            try:
                body = sqlglot.parse_one(view, read="duckdb")
                body = body.expression if isinstance(body, exp.Create) else body
                why = _reads(body, ours, relations, depth - 1)
            except sqlglot.errors.ParseError:
                why = f"its view {table.name} could not be followed"
            if why:
                return f"{why} (through the view {table.name})"
        elif view:
            return f"its views nest more than {_DEPTH} deep"
    return ""


def _resolve(
    table: exp.Table, name: str, ours: str, relations: dict[str, list[tuple]]
) -> tuple | None:
    """The relation DuckDB binds ``table`` to: a temporary object first, then the schema (of
    this database) or the database (its main schema) named, else this database's main schema."""
    catalog, schema = table.catalog.lower(), table.db.lower()
    rows = [(r[0].lower(), r[1].lower(), r) for r in relations.get(name, [])]
    if not catalog and schema in ("", "main", "temp"):
        temp = [r for _, _, r in rows if r[3]]
        if temp:
            return temp[0]
    if catalog:
        wanted = [(catalog, schema or "main")]
    elif schema:
        wanted = [(ours.lower(), schema), (schema, "main")]
    else:
        wanted = [(ours.lower(), "main")]
    for where in wanted:
        for db, sch, r in rows:
            if (db, sch) == where:
                return r
    return None


__all__ = ["Stamp", "bump", "stamp", "unwitnessed", "writes"]
