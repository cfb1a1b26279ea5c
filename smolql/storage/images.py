"""Reads of a catalog's image rows and renditions (``smolql.images``, ``smolql.renditions``)
for the planner, the executor and the front ends."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from smolql.storage.schema import SCHEMA


def rendition_paths(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[int, dict[str, str]]:
    """Image id -> rendition spec -> file."""
    out: dict[int, dict[str, str]] = {}
    for image_id, spec, path in con.execute(
        f"SELECT image_id, spec, path FROM {SCHEMA}.renditions WHERE catalog = ?", [catalog]
    ).fetchall():
        out.setdefault(image_id, {})[spec] = path
    return out


def smallest_rendition(con: duckdb.DuckDBPyConnection, catalog: str, image_id: int) -> str | None:
    """The smallest rendition file of one image (thumbnails), if it has any."""
    rows = con.execute(
        f"SELECT path FROM {SCHEMA}.renditions WHERE catalog = ? AND image_id = ?"
        " ORDER BY least(width, height), bytes LIMIT 1",
        [catalog, image_id],
    ).fetchall()
    return rows[0][0] if rows else None


def catalog_listing(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every catalog with its status, image count, source and renditions."""
    return con.sql(
        "SELECT c.name, c.status, count(i.id) AS images, c.source, c.renditions"
        f" FROM {SCHEMA}.catalogs c LEFT JOIN {SCHEMA}.images i ON i.catalog = c.name"
        " GROUP BY ALL ORDER BY c.name"
    ).to_arrow_table()


def rendition_rows(
    con: duckdb.DuckDBPyConnection, catalog: str, rendition: str, where: str
) -> list[tuple[int, str]]:
    """(id, rendition file) of the catalog's rows that pass SQL ``where`` (may be empty)."""
    cond = f" WHERE {where}" if where else ""
    return con.execute(
        f'SELECT c.id, r.path FROM "{catalog}" c JOIN {SCHEMA}.renditions r'
        " ON r.catalog = ? AND r.image_id = c.id AND r.spec = ?"
        f"{cond} ORDER BY c.id",
        [catalog, rendition],
    ).fetchall()
