"""Catalog lifecycle: create, refresh, drop, list and describe (the rows themselves are
:mod:`smolql.storage.catalogs`'s)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

import duckdb

from smolql.errors import CatalogError, CatalogInputError
from smolql.ingest.definition import parse_specs
from smolql.ingest.ingest import IngestSummary, Runner, ingest
from smolql.ingest.scan import resolve_source, scan, source_columns
from smolql.ops.pipeline import ImageRef
from smolql.sources import files_under, is_remote, remove
from smolql.storage import catalogs as stored
from smolql.storage.images import rendition_rows
from smolql.storage.schema import RenditionRoot
from smolql.suggest import did_you_mean

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    run: Runner | None = None  # where files are processed (None: this machine's threads)


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
        row = {**vars(d), "renditions": list(d.renditions)}
        stored.add_catalog(con, row, source_columns(d.source))
    return _sync(con, root, d, opts)


def refresh(
    con: duckdb.DuckDBPyConnection, root: RenditionRoot, name: str, opts: IngestOptions
) -> IngestSummary:
    """Pick up added, changed and deleted files (and an edited labels CSV or manifest)."""
    d = get_definition(con, name)
    fresh_labels = bool(d.labels and os.path.exists(d.labels))
    columns = source_columns(d.source)
    if fresh_labels or columns is not None:
        stored.create_view(con, d.name, d.labels, columns, reload_labels=fresh_labels)
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
        run=opts.run,
    )
    stored.mark_ready(con, d.name)
    return summary


def drop(con: duckdb.DuckDBPyConnection, root: RenditionRoot, name: str) -> None:
    """Remove a catalog's view, rows, labels and rendition files (never the source images)."""
    get_definition(con, name)
    stored.drop_catalog(con, name)
    folder = root.catalog_dir(name)
    if is_remote(folder):
        for path in files_under(folder):
            remove(path)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return stored.catalog_names(con)


def get_definition(
    con: duckdb.DuckDBPyConnection, name: str, *, missing_ok: bool = False
) -> CatalogDef | None:
    row = stored.catalog(con, name)
    if row is None:
        if missing_ok:
            return None
        raise CatalogInputError(f"no catalog named {name!r}{did_you_mean(name, names(con))}")
    return CatalogDef(
        row["name"], row["source"], tuple(row["renditions"]), row["labels"], row["max_pixels"]
    )


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
    if stored.name_taken(con, name):
        raise CatalogInputError(f"a table or view named {name!r} already exists")


def describe(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    """Definition, counts, renditions and errors of one catalog, for ``catalog show``."""
    d = get_definition(con, name)
    row = stored.catalog(con, name)
    return {
        "name": d.name,
        "source": d.source,
        "labels": d.labels,
        "status": row["status"],
        "created": row["created"],
        "updated": row["updated"],
        **stored.totals(con, name),
    }


def label_column(
    con: duckdb.DuckDBPyConnection, catalog: str, wanted: str | None = None
) -> str | None:
    """The column that holds a catalog's true classes: ``wanted`` (an error if it has none
    of that name), else an integer ``class_index`` (from its labels or manifest), else None."""
    columns = {r[0]: r[1] for r in con.execute(f'DESCRIBE "{catalog}"').fetchall()}
    if wanted:
        if wanted not in columns:
            raise CatalogError(f"catalog {catalog!r} has no column {wanted!r} to score against")
        return wanted
    return "class_index" if "INT" in columns.get("class_index", "") else None


def class_indices(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, int]:
    """Path -> the catalog's ``class_index`` label, or nothing when it has none."""
    if label_column(con, catalog) is None:
        return {}
    rows = con.execute(
        f'SELECT path, class_index FROM "{catalog}" WHERE class_index IS NOT NULL ORDER BY id'
    )
    return dict(rows.fetchall())


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
