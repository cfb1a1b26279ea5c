"""Find the image files a catalog source names: a directory (recursive) or a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from smolql.errors import CatalogInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def resolve_source(source: str) -> str:
    """Normalise a source to an absolute directory or glob, checking that it can exist."""
    expanded = os.path.expanduser(source)
    if glob.has_magic(expanded):
        return os.path.abspath(expanded)
    path = Path(expanded).resolve()
    if not path.is_dir():
        raise CatalogInputError("catalog source is not a directory or a glob", file=str(path))
    return str(path)


def scan(source: str) -> list[str]:
    """Absolute paths of image files under ``source``, sorted.

    Files are matched on their extension; their content is checked at ingest, where a bad file
    is recorded as an error instead of stopping the rest.
    """
    if glob.has_magic(source):
        candidates = glob.iglob(source, recursive=True)
    else:
        candidates = (
            os.path.join(root, name)
            for root, _dirs, names in os.walk(source, followlinks=False)
            for name in names
        )
    return sorted(
        os.path.abspath(p) for p in candidates if is_image_name(p) and not os.path.isdir(p)
    )
