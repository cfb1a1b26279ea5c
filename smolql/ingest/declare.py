"""Declarative catalogs: a TOML file that says what a catalog is.

    name = "photos"
    description = "Holiday photographs"
    source = "images/"              # a folder, glob, manifest or s3://bucket/prefix/
    renditions = ["161:jpeg:75"]    # optional (default: SmolQL's); [] for none
    labels = "labels.csv"           # optional: joined on the file name
    boxes = "annotations.json"      # optional: COCO JSON or a table of file, x, y, w, h, label
    max_pixels = 100000000          # optional

    [[queries]]                     # optional examples (``smolql demo`` prints its own)
    title = "..."
    sql = "..."

Local paths are relative to the TOML file's folder. ``smolql catalog create --from FILE``; the
demo catalog (``catalogs/demo.toml``) is read by the same loader.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from smolql.errors import CatalogInputError
from smolql.ingest.definition import DEFAULT_RENDITIONS

KEYS = {
    "name", "description", "source", "renditions", "labels", "boxes", "max_pixels", "queries",
    "images",  # the demo's: scikit-image files to write, and in which format
}  # fmt: skip


@dataclass(frozen=True)
class CatalogFile:
    name: str
    source: str | None
    renditions: tuple[str, ...] = DEFAULT_RENDITIONS
    labels: str | None = None
    boxes: str | None = None
    max_pixels: int | None = None
    description: str = ""
    queries: tuple[dict, ...] = ()
    images: dict = field(default_factory=dict)


def parse(text: str, folder: str, where: str = "<text>") -> CatalogFile:
    """A catalog file's contents; ``folder`` anchors its relative paths."""
    from smolql.suggest import did_you_mean

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogInputError(f"not a valid TOML catalog file: {e}", file=where) from e
    for key in doc:
        if key not in KEYS:
            raise CatalogInputError(
                f"unknown key {key!r} in the catalog file{did_you_mean(key, KEYS)}", file=where
            )
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise CatalogInputError('the catalog file needs a name = "..."', file=where)
    renditions = doc.get("renditions", list(DEFAULT_RENDITIONS))
    if not isinstance(renditions, list) or not all(isinstance(r, str) for r in renditions):
        raise CatalogInputError("renditions must be a list of specs (e.g. [\"161:jpeg:75\"])",
                                file=where)  # fmt: skip
    queries, images = doc.get("queries", []), doc.get("images", {})
    if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
        raise CatalogInputError("queries must be [[queries]] tables (title, sql)", file=where)
    if not isinstance(images, dict):
        raise CatalogInputError("images must be a table of file = format", file=where)
    max_pixels = doc.get("max_pixels")
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels <= 0):
        raise CatalogInputError("max_pixels must be a positive integer", file=where)

    def path(key: str) -> str | None:
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise CatalogInputError(f"{key} must be a path or URI", file=where)
        if "://" in value:
            return value
        return os.path.normpath(os.path.join(folder, os.path.expanduser(value)))

    return CatalogFile(
        name=doc["name"],
        source=path("source"),
        renditions=tuple(renditions),
        labels=path("labels"),
        boxes=path("boxes"),
        max_pixels=max_pixels,
        description=str(doc.get("description", "")),
        queries=tuple(queries),
        images=dict(images),
    )


def load(file: str) -> CatalogFile:
    """Read a catalog file."""
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CatalogInputError(
            f"cannot read the catalog file: {e.strerror or e}", file=file
        ) from e
    return parse(text, os.path.dirname(os.path.abspath(file)), file)
