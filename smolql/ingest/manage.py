"""Catalog lifecycle: create, refresh, drop, list and describe.

A catalog named ``photos`` is a view ``photos`` over the system table ``smolql.images``,
left-joined with its labels (if any) on the file name.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

import duckdb

from smolql.errors import CatalogInputError
from smolql.ingest.definition import parse_specs
from smolql.ingest.ingest import IngestSummary, ingest
from smolql.ingest.scan import resolve_source, scan
from smolql.ops.pipeline import ImageRef
from smolql.storage.images import rendition_rows
from smolql.storage.schema import SCHEMA, RenditionRoot, fetch_one
from smolql.suggest import did_you_mean

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CATALOG_COLUMNS = (
    "id", "file", "path", "image", "format", "width", "height", "bytes", "mtime", "hash",
    "orientation", "progressive", "subsampling", "mode",
)  # fmt: skip
LABEL_KEYS = ("file", "filename", "path")


@dataclass(frozen=True)
class CatalogDef:
    name: str
    source: str
    renditions: tuple[str, ...]
    labels: str | None
    max_pixels: int


@dataclass(frozen=True)
class IngestOptions:
    workers: int
    progress: bool | None = None


def create(
    con: duckdb.DuckDBPyConnection, root: RenditionRoot, definition: CatalogDef, opts: IngestOptions
) -> IngestSummary:
    """Create a catalog and ingest it; re-running with the same definition resumes it."""
    _check_name(definition.name)
    d = _normalise(definition)
    existing = get_definition(con, d.name, missing_ok=True)
    if existing is not None and existing != d:
        raise CatalogInputError(
            f"catalog {d.name!r} already exists with another definition"
            f" (source {existing.source}); refresh it or drop it first"
        )
    if existing is None:
        _check_free(con, d.name)
        con.begin()
        try:
            con.execute(
                f"INSERT INTO {SCHEMA}.catalogs VALUES (?, ?, ?, ?, ?, 'building', now(), now())",
                [d.name, d.source, list(d.renditions), d.labels, d.max_pixels],
            )
            _load_labels(con, d)
            con.commit()
        except BaseException:
            con.rollback()
            raise
    return _sync(con, root, d, opts)


def refresh(
    con: duckdb.DuckDBPyConnection, root: RenditionRoot, name: str, opts: IngestOptions
) -> IngestSummary:
    """Pick up added, changed and deleted files (and an edited labels CSV)."""
    d = get_definition(con, name)
    if d.labels and os.path.exists(d.labels):
        _load_labels(con, d)
    return _sync(con, root, d, opts)


def _sync(
    con: duckdb.DuckDBPyConnection, root: RenditionRoot, d: CatalogDef, opts: IngestOptions
) -> IngestSummary:
    summary = ingest(
        con,
        d.name,
        scan(d.source),
        parse_specs(d.renditions),
        root.catalog_dir(d.name),
        max_pixels=d.max_pixels,
        workers=opts.workers,
        progress=opts.progress,
    )
    con.execute(
        f"UPDATE {SCHEMA}.catalogs SET status = 'ready', updated = now() WHERE name = ?", [d.name]
    )
    return summary


def drop(con: duckdb.DuckDBPyConnection, root: RenditionRoot, name: str) -> None:
    """Remove a catalog's view, rows, labels and rendition files (never the source images)."""
    get_definition(con, name)
    con.begin()
    for table in ("images", "renditions", "errors"):
        con.execute(f"DELETE FROM {SCHEMA}.{table} WHERE catalog = ?", [name])
    con.execute(f"DELETE FROM {SCHEMA}.catalogs WHERE name = ?", [name])
    con.execute(f'DROP VIEW IF EXISTS "{name}"')
    con.execute(f'DROP TABLE IF EXISTS {SCHEMA}."labels_{name}"')
    con.commit()
    shutil.rmtree(root.catalog_dir(name), ignore_errors=True)


def names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        n for (n,) in con.execute(f"SELECT name FROM {SCHEMA}.catalogs ORDER BY name").fetchall()
    ]


def get_definition(
    con: duckdb.DuckDBPyConnection, name: str, *, missing_ok: bool = False
) -> CatalogDef | None:
    row = fetch_one(
        con,
        f"SELECT name, source, renditions, labels, max_pixels FROM {SCHEMA}.catalogs"
        " WHERE name = ?",
        [name],
    )
    if row is None:
        if missing_ok:
            return None
        raise CatalogInputError(f"no catalog named {name!r}{did_you_mean(name, names(con))}")
    return CatalogDef(row[0], row[1], tuple(row[2]), row[3], row[4])


def _normalise(d: CatalogDef) -> CatalogDef:
    specs = parse_specs(d.renditions)
    labels = os.path.abspath(d.labels) if d.labels else None
    if labels and not os.path.isfile(labels):
        raise CatalogInputError("labels CSV not found", file=labels)
    return CatalogDef(
        d.name, resolve_source(d.source), tuple(map(str, specs)), labels, d.max_pixels
    )


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise CatalogInputError(
            f"catalog name {name!r} must be a plain SQL identifier (letters, digits, _)"
        )


def _check_free(con: duckdb.DuckDBPyConnection, name: str) -> None:
    taken = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'"
        " UNION ALL SELECT count(*) FROM duckdb_views() WHERE view_name = ?"
        " AND schema_name = 'main'",
        [name, name],
    ).fetchall()
    if any(n for (n,) in taken):
        raise CatalogInputError(f"a table or view named {name!r} already exists")


def _load_labels(con: duckdb.DuckDBPyConnection, d: CatalogDef) -> None:
    """Copy the labels CSV into ``smolql.labels_<name>`` and (re)create the catalog view."""
    table = f'{SCHEMA}."labels_{d.name}"'
    if d.labels:
        csv = "'" + d.labels.replace("'", "''") + "'"
        try:
            columns = [
                r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_csv({csv})").fetchall()
            ]
        except duckdb.Error as e:
            raise CatalogInputError(f"cannot read labels CSV: {e}", file=d.labels) from e
        key = next((c for c in columns if c.lower() in LABEL_KEYS), columns[0])
        clash = [c for c in columns if c != key and c.lower() in CATALOG_COLUMNS]
        if clash:
            raise CatalogInputError(
                f"labels CSV column(s) {clash} clash with catalog columns", file=d.labels
            )
        con.execute(
            f'CREATE OR REPLACE TABLE {table} AS SELECT regexp_extract(CAST("{key}" AS VARCHAR),'
            f" '[^/\\\\]+$') AS file, * EXCLUDE (\"{key}\") FROM read_csv({csv})"
        )
        dup = fetch_one(con, f"SELECT file FROM {table} GROUP BY file HAVING count(*) > 1 LIMIT 1")
        if dup:
            raise CatalogInputError(f"labels CSV names file {dup[0]!r} twice", file=d.labels)
    con.execute(f'CREATE OR REPLACE VIEW "{d.name}" AS {_view_sql(d.name, bool(d.labels))}')


def _view_sql(name: str, labelled: bool) -> str:
    image = "{'catalog': i.catalog, 'id': i.id, 'path': i.path, 'hash': i.hash}"
    base = ", ".join(f"i.{c}" if c != "image" else f"{image} AS image" for c in CATALOG_COLUMNS)
    if not labelled:
        return f"SELECT {base} FROM {SCHEMA}.images AS i WHERE i.catalog = '{name}'"
    return (
        f"SELECT {base}, l.* EXCLUDE (file) FROM {SCHEMA}.images AS i"
        f' LEFT JOIN {SCHEMA}."labels_{name}" AS l ON l.file = i.file'
        f" WHERE i.catalog = '{name}'"
    )


def describe(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    """Definition, counts, renditions and errors of one catalog, for ``catalog show``."""
    d = get_definition(con, name)
    status, created, updated = fetch_one(
        con, f"SELECT status, created, updated FROM {SCHEMA}.catalogs WHERE name = ?", [name]
    )
    images, total_bytes = fetch_one(
        con,
        f"SELECT count(*), coalesce(sum(bytes), 0) FROM {SCHEMA}.images WHERE catalog = ?",
        [name],
    )
    renditions = con.execute(
        f"SELECT spec, count(*), sum(bytes) FROM {SCHEMA}.renditions WHERE catalog = ?"
        " GROUP BY spec ORDER BY spec",
        [name],
    ).fetchall()
    errors = con.execute(
        f"SELECT path, reason FROM {SCHEMA}.errors WHERE catalog = ? ORDER BY path", [name]
    ).fetchall()
    return {
        "name": d.name,
        "source": d.source,
        "labels": d.labels,
        "status": status,
        "created": created,
        "updated": updated,
        "images": images,
        "bytes": total_bytes,
        "renditions": [{"spec": s, "files": n, "bytes": b} for s, n, b in renditions],
        "errors": [{"path": p, "reason": r} for p, r in errors],
    }


def image_refs(
    con: duckdb.DuckDBPyConnection, catalog: str, rendition: str | None, where: str | None
) -> list[ImageRef]:
    """The catalog's images (or one rendition of them), optionally filtered by SQL ``where``."""
    get_definition(con, catalog)
    cond = f" WHERE {where}" if where else ""
    if rendition is None:
        rows = con.execute(f'SELECT id, path, orientation FROM "{catalog}"{cond} ORDER BY id')
        return [ImageRef(i, p, o) for i, p, o in rows.fetchall()]
    rows = rendition_rows(con, catalog, rendition, where or "")
    return [ImageRef(i, p, 1) for i, p in rows]  # renditions are stored upright
