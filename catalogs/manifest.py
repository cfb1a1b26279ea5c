"""The manifest catalog source: a Parquet, CSV or JSON Lines file listing images.

The manifest has a ``path`` (or ``uri``) column: a local path, relative to the manifest's folder
or absolute, or an object-storage URI (read through that source); every other column becomes a
catalog column with its type (Parquet's own; CSV and JSON Lines as DuckDB infers them). A
path listed twice is an error naming it. The manifest is read again by ``refresh``.

    smolql catalog create photos manifest.parquet

Registered through the ``smolql.sources`` entry-point group, as any connector would be.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache

import duckdb
import pyarrow as pa

from smolql.errors import CatalogInputError
from smolql.sources import Signature, Source, source_for

READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".jsonl": "read_json",
    ".ndjson": "read_json",
}
KEYS = ("path", "uri")


def is_manifest(location: str) -> bool:
    return "://" not in location and os.path.splitext(location)[1].lower() in READERS


class ManifestSource(Source):
    name = "manifest"

    def claims(self, location: str) -> bool:
        return is_manifest(location)

    def resolve(self, location: str) -> str:
        path = os.path.abspath(os.path.expanduser(location))
        if not os.path.isfile(path):
            raise CatalogInputError("manifest not found", file=path)
        self.columns(path)  # readable, with a path column, no path twice
        return path

    def list(self, location: str) -> list[str]:
        return sorted(self.columns(location).column("path").to_pylist())

    def columns(self, location: str) -> pa.Table:
        """The manifest as a table: ``path`` (resolved) and its other columns; read once per
        version of the file (create resolves, lists and joins it)."""
        try:
            st = os.stat(location)
        except OSError as e:
            raise CatalogInputError(f"cannot read the manifest: {e.strerror}", file=location) from e
        return _read(location, st.st_size, st.st_mtime_ns, st.st_ino)

    def stat(self, path: str) -> Signature:
        return source_for(path).stat(path)

    def read(self, path: str) -> tuple[bytes, Signature]:
        return source_for(path).read(path)


@lru_cache(maxsize=2)  # a large manifest is held only while in use
def _read(location: str, size: int, mtime_ns: int, inode: int) -> pa.Table:
    """The manifest's table, for one version of the file (size, mtime, inode)."""
    reader = READERS[os.path.splitext(location)[1].lower()]
    quoted = "'" + location.replace("'", "''") + "'"
    try:
        table = duckdb.connect().sql(f"SELECT * FROM {reader}({quoted})").to_arrow_table()
    except duckdb.Error as e:
        raise CatalogInputError(f"cannot read the manifest: {e}", file=location) from e
    names = {n.lower(): n for n in table.column_names}
    key = next((names[k] for k in KEYS if k in names), None)
    if key is None:
        raise CatalogInputError(
            f"the manifest has no path or uri column (columns: {', '.join(table.column_names)})",
            file=location,
        )
    folder = os.path.dirname(location)
    paths = [_resolved(p, folder) for p in table.column(key).to_pylist()]
    missing = [i for i, p in enumerate(paths) if p is None]
    if missing:
        raise CatalogInputError(f"the manifest's row {missing[0] + 1} has no {key}", file=location)
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise CatalogInputError(f"the manifest lists {p} twice", file=location)
        seen.add(p)
    rest = table.drop_columns([key])
    return rest.add_column(0, "path", pa.array(paths, pa.string()))


def _resolved(value: object, folder: str) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if "://" in text:
        return text
    return os.path.normpath(os.path.join(folder, os.path.expanduser(text)))


def register(register_source: Callable[[Source], Source]) -> None:
    """Entry point of the ``smolql.sources`` group."""
    register_source(ManifestSource())
