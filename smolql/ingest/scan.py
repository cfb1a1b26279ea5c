"""Find the image files a catalog location names, through the source that serves it
(:mod:`smolql.sources`; the local folder/glob source is ``smolql.catalogs.local``)."""

from __future__ import annotations

import pyarrow as pa

from smolql.sources import source_for


def resolve_source(location: str) -> str:
    """The normalised location (an absolute directory or glob for local files)."""
    return source_for(location).resolve(location)


def scan(location: str) -> list[str]:
    """Paths of the image files at ``location``, sorted."""
    return source_for(location).list(location)


def source_columns(location: str) -> pa.Table | None:
    """The source's own columns for the catalog view (a manifest's: ``path`` and the rest),
    or None."""
    columns = getattr(source_for(location), "columns", None)
    return columns(location) if columns is not None else None
