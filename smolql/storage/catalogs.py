"""Catalog rows and their images as stored: ``smolql.catalogs``, ``smolql.images``,
``smolql.renditions``, ``smolql.errors``, the labels tables and each catalog's view.

A catalog named ``photos`` is a view ``photos`` over ``smolql.images``, left-joined with its
labels (``smolql."labels_photos"``, if any) on the file name and with its manifest's columns
(``smolql."manifest_photos"``, if its source is a manifest) on the path. Ingest commits in small
transactions through :func:`replace_images` and :func:`remove_images`, so a killed ingest leaves
only whole rows behind.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from smolql.errors import CatalogInputError
from smolql.storage.schema import SCHEMA, fetch_one, insert

CATALOG_COLUMNS = (
    "id", "file", "path", "image", "format", "width", "height", "bytes", "mtime", "hash",
    "orientation", "progressive", "subsampling", "mode",
)  # fmt: skip
LABEL_KEYS = ("file", "filename", "path")
DEFINITION = ("name", "source", "renditions", "labels", "max_pixels")


# -- catalogs ----------------------------------------------------------------------------------


def add_catalog(
    con: duckdb.DuckDBPyConnection, definition: dict[str, Any], columns: pa.Table | None = None
) -> None:
    """Record a new catalog (status 'building') and create its view (with its source's own
    columns, where it has some), in one transaction."""
    con.begin()
    try:
        insert(con, "catalogs", {**definition, "status": "building"}, now=("created", "updated"))
        create_view(con, definition["name"], definition["labels"], columns)
        con.commit()
    except BaseException:
        con.rollback()
        raise


def mark_ready(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(
        f"UPDATE {SCHEMA}.catalogs SET status = 'ready', updated = now() WHERE name = ?", [name]
    )


def drop_catalog(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Remove a catalog's rows, labels, manifest, boxes and views in one transaction."""
    con.begin()
    try:
        for table in ("images", "renditions", "errors"):
            con.execute(f"DELETE FROM {SCHEMA}.{table} WHERE catalog = ?", [name])
        con.execute(f"DELETE FROM {SCHEMA}.catalogs WHERE name = ?", [name])
        con.execute(f'DROP VIEW IF EXISTS "{name}"')
        con.execute(f'DROP TABLE IF EXISTS {SCHEMA}."labels_{name}"')
        con.execute(f'DROP TABLE IF EXISTS {SCHEMA}."manifest_{name}"')
        con.execute(f'DROP VIEW IF EXISTS "{name}_boxes"')  # as databases before 2026-12 had it
        con.execute(f'DROP TABLE IF EXISTS {SCHEMA}."boxes_{name}"')
        for (table,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?"
            " AND starts_with(table_name, ?)",
            [SCHEMA, f"boxes:{name}:"],
        ).fetchall():
            con.execute(f'DROP VIEW IF EXISTS "{table.split(":", 2)[2]}"')
            con.execute(f'DROP TABLE {SCHEMA}."{table}"')
        con.commit()
    except BaseException:
        con.rollback()
        raise


def catalog_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        n for (n,) in con.execute(f"SELECT name FROM {SCHEMA}.catalogs ORDER BY name").fetchall()
    ]


def catalog(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    """A catalog's definition and status, by column, or None."""
    columns = (*DEFINITION, "status", "created", "updated")
    row = fetch_one(
        con, f"SELECT {', '.join(columns)} FROM {SCHEMA}.catalogs WHERE name = ?", [name]
    )
    return dict(zip(columns, row, strict=True)) if row else None


def name_taken(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """A user table or view of that name exists."""
    taken = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'"
        " UNION ALL SELECT count(*) FROM duckdb_views() WHERE view_name = ?"
        " AND schema_name = 'main'",
        [name, name],
    ).fetchall()
    return any(n for (n,) in taken)


def relations(con: duckdb.DuckDBPyConnection) -> tuple[str, list[tuple]]:
    """This connection's database name, and every table and view it can see as (database,
    schema, name, temporary, the view's SQL or None)."""
    ours = con.execute("SELECT current_database()").fetchone()[0]
    rows = con.execute(
        "SELECT database_name, schema_name, table_name, temporary, NULL FROM duckdb_tables()"
        " UNION ALL SELECT database_name, schema_name, view_name, temporary, sql"
        " FROM duckdb_views() WHERE NOT internal"
    ).fetchall()
    return ours, rows


def load_labels(con: duckdb.DuckDBPyConnection, name: str, labels: str) -> None:
    """Copy a labels CSV into ``smolql."labels_<name>"``: keyed by file name (its first column
    named file, filename or path, else its first column), no column clashing with the
    catalog's, no file twice."""
    table = f'{SCHEMA}."labels_{name}"'
    csv = "'" + labels.replace("'", "''") + "'"
    try:
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_csv({csv})").fetchall()]
    except duckdb.Error as e:
        raise CatalogInputError(f"cannot read labels CSV: {e}", file=labels) from e
    key = next((c for c in columns if c.lower() in LABEL_KEYS), columns[0])
    clash = [c for c in columns if c != key and c.lower() in CATALOG_COLUMNS]
    if clash:
        raise CatalogInputError(
            f"labels CSV column(s) {clash} clash with catalog columns", file=labels
        )
    con.execute(
        f'CREATE OR REPLACE TABLE {table} AS SELECT regexp_extract(CAST("{key}" AS VARCHAR),'
        f" '[^/\\\\]+$') AS file, * EXCLUDE (\"{key}\") FROM read_csv({csv})"
    )
    dup = fetch_one(con, f"SELECT file FROM {table} GROUP BY file HAVING count(*) > 1 LIMIT 1")
    if dup:
        raise CatalogInputError(f"labels CSV names file {dup[0]!r} twice", file=labels)


def create_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    labels: str | None,
    columns: pa.Table | None = None,
    *,
    reload_labels: bool = True,
) -> None:
    """(Re)create the catalog's view: its images, left-joined with its labels CSV on the file
    name (loaded first unless ``reload_labels`` is false) and with its source's own columns
    (``columns``: a manifest's, keyed by ``path``; kept in ``smolql."manifest_<name>"``)."""
    if labels and reload_labels:
        load_labels(con, name, labels)
    manifest = f'{SCHEMA}."manifest_{name}"'
    if columns is not None:
        clash = [c for c in columns.column_names if c != "path" and c.lower() in CATALOG_COLUMNS]
        if clash:
            raise CatalogInputError(f"manifest column(s) {clash} clash with catalog columns")
        con.register("__smolql_manifest", columns)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {manifest} AS SELECT * FROM __smolql_manifest")
        finally:
            con.unregister("__smolql_manifest")
    has_manifest = fetch_one(
        con,
        "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
        [SCHEMA, f"manifest_{name}"],
    )
    image = "{'catalog': i.catalog, 'id': i.id, 'path': i.path, 'hash': i.hash}"
    base = ", ".join(f"i.{c}" if c != "image" else f"{image} AS image" for c in CATALOG_COLUMNS)
    select, joins = [base], []
    if labels:
        select.append("l.* EXCLUDE (file)")
        joins.append(f' LEFT JOIN {SCHEMA}."labels_{name}" AS l ON l.file = i.file')
    if has_manifest:
        select.append("m.* EXCLUDE (path)")
        joins.append(f" LEFT JOIN {manifest} AS m ON m.path = i.path")
    sql = (
        f"SELECT {', '.join(select)} FROM {SCHEMA}.images AS i{''.join(joins)}"
        f" WHERE i.catalog = '{name}'"
    )
    con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')


def replace_boxes(con: duckdb.DuckDBPyConnection, catalog: str, boxes: pa.Table, view: str) -> None:
    """Store a catalog's boxes (``smolql."boxes:<catalog>:<view>"``) and (re)create the view that
    joins them to its images, in one transaction. A box's ``file`` names its image by the
    end of its path: a file name, or as many folders as it takes (``train/0001.jpg``), or the
    whole path or URI; a reference that fits two images of the catalog is an error naming it."""
    table = f'{SCHEMA}."boxes:{catalog}:{view}"'  # one per view: a catalog may have several
    match = (
        f"i.catalog = '{catalog}' AND i.file = regexp_extract(b.file, '[^/]*$')"
        " AND (i.path = b.file OR ends_with(i.path, '/' || b.file))"
    )
    con.begin()
    try:
        con.register("__smolql_boxes", boxes)
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM __smolql_boxes")
        con.unregister("__smolql_boxes")
        twice = con.execute(
            f"SELECT b.file, list(i.path ORDER BY i.path)[:2] FROM (SELECT DISTINCT file FROM"
            f" {table}) b JOIN {SCHEMA}.images i ON {match} GROUP BY b.file"
            " HAVING count(*) > 1 ORDER BY b.file LIMIT 1"
        ).fetchone()
        if twice:
            raise CatalogInputError(
                f"the annotation's image {twice[0]!r} fits several images of {catalog!r}"
                f" ({', '.join(twice[1])}, ...): give it with its folder"
            )
        con.execute(
            f'CREATE OR REPLACE VIEW "{view}" AS SELECT i.id AS image_id, b.* FROM {table} b'
            f" LEFT JOIN {SCHEMA}.images i ON {match}"
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def totals(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any]:
    """Counts for ``catalog show``: images and bytes, renditions per spec, recorded errors."""
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
        "images": images,
        "bytes": total_bytes,
        "renditions": [{"spec": s, "files": n, "bytes": b} for s, n, b in renditions],
        "errors": [{"path": p, "reason": r} for p, r in errors],
    }


# -- ingest ------------------------------------------------------------------------------------


def counts(con: duckdb.DuckDBPyConnection, name: str) -> tuple[int, int]:
    """(images, files skipped with an error) of a catalog."""
    row = fetch_one(
        con,
        f"SELECT (SELECT count(*) FROM {SCHEMA}.images WHERE catalog = $1),"
        f" (SELECT count(*) FROM {SCHEMA}.errors WHERE catalog = $1)",
        [name],
    )
    return row[0], row[1]


def recorded_files(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, tuple[int, tuple]]:
    """Path -> (image id, signature recorded at ingest: bytes, mtime_ns, ctime_ns, inode)."""
    return {
        path: (image_id, tuple(signature))
        for image_id, path, *signature in con.execute(
            f"SELECT id, path, bytes, mtime_ns, ctime_ns, inode FROM {SCHEMA}.images"
            " WHERE catalog = ?",
            [name],
        ).fetchall()
    }


def rendition_files(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[int, str, str]]:
    """(image id, spec, file) of every rendition of a catalog."""
    return con.execute(
        f"SELECT image_id, spec, path FROM {SCHEMA}.renditions WHERE catalog = ?", [name]
    ).fetchall()


def replace_images(
    con: duckdb.DuckDBPyConnection,
    name: str,
    ids: list[int],
    paths: list[str],
    images: list[dict],
    renditions: list[dict],
    errors: list[dict],
    *,
    replaces: bool = True,
) -> None:
    """One ingest commit: the rows of images ``ids`` (and errors of ``paths``) replaced by the
    new ones, atomically (``replaces`` false: the caller knows there is nothing to replace)."""
    con.begin()
    try:
        con.register("_ids", pa.table({"id": pa.array(ids, pa.int32())}))
        con.register("_paths", pa.table({"path": pa.array(paths, pa.string())}))
        if replaces:
            _delete_replaced(con, name)
        _insert_rows(con, "images", images)
        _insert_rows(con, "renditions", renditions)
        _insert_rows(con, "errors", errors, stamp="recorded")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.unregister("_ids")
        con.unregister("_paths")


def _delete_replaced(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """The earlier rows of the images in ``_ids`` and errors of the paths in ``_paths``."""
    con.execute(
        f"DELETE FROM {SCHEMA}.images WHERE catalog = ? AND id IN (SELECT id FROM _ids)", [name]
    )
    con.execute(
        f"DELETE FROM {SCHEMA}.renditions WHERE catalog = ? AND image_id IN (SELECT id FROM _ids)",
        [name],
    )
    con.execute(
        f"DELETE FROM {SCHEMA}.errors WHERE catalog = ? AND path IN (SELECT path FROM _paths)",
        [name],
    )


def _insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[dict], stamp: str | None = None
) -> None:
    """Many rows by column name (``BY NAME``), through an Arrow table."""
    if not rows:
        return
    con.register("_rows", pa.Table.from_pylist(rows))
    try:
        extra = f", now()::TIMESTAMP AS {stamp}" if stamp else ""
        con.execute(f"INSERT INTO {SCHEMA}.{table} BY NAME SELECT *{extra} FROM _rows")
    finally:
        con.unregister("_rows")


def remove_images(
    con: duckdb.DuckDBPyConnection, name: str, ids: list[int], present: list[str]
) -> None:
    """Drop rows of files that are gone, and errors recorded for files no longer there."""
    con.begin()
    con.register("_present", pa.table({"path": pa.array(present, pa.string())}))
    try:
        for table, column in (("images", "id"), ("renditions", "image_id")):
            con.execute(
                f"DELETE FROM {SCHEMA}.{table} WHERE catalog = ? AND list_contains(?, {column})",
                [name, ids],
            )
        con.execute(
            f"DELETE FROM {SCHEMA}.errors WHERE catalog = ?"
            " AND path NOT IN (SELECT path FROM _present)",
            [name],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.unregister("_present")
