"""The local catalog source: a directory (searched recursively) or a glob of image files.

Registered through the ``smolql.sources`` entry-point group, as any connector would be.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
from collections.abc import Callable
from pathlib import Path

from smolql.catalogs.manifest import is_manifest

from smolql.errors import CatalogInputError
from smolql.sources import TMP_MARK, Signature, Source

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def signature(st: os.stat_result) -> Signature:
    """Size, mtime, ctime and inode: any write changes mtime and ctime (which no user can
    set back), a replacement usually the inode too."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class LocalSource(Source):
    name = "local"

    def claims(self, location: str) -> bool:
        return "://" not in location and not is_manifest(location)

    def resolve(self, location: str) -> str:
        expanded = os.path.expanduser(location)
        if glob.has_magic(expanded):
            return os.path.abspath(expanded)
        path = Path(expanded).resolve()
        if not path.is_dir():
            raise CatalogInputError("catalog source is not a directory or a glob", file=str(path))
        return str(path)

    def list(self, location: str) -> list[str]:
        """Files are matched on their extension; their content is checked at ingest, where a
        bad file is recorded as an error instead of stopping the rest."""
        if glob.has_magic(location):
            candidates = glob.iglob(location, recursive=True)
        else:
            candidates = (
                os.path.join(root, name)
                for root, _dirs, names in os.walk(location, followlinks=False)
                for name in names
            )
        return sorted(
            os.path.abspath(p) for p in candidates if is_image_name(p) and not os.path.isdir(p)
        )

    def stat(self, path: str) -> Signature:
        return signature(os.stat(path))

    def read(self, path: str) -> tuple[bytes, Signature]:
        with open(path, "rb") as f:
            data = f.read()
            return data, signature(os.fstat(f.fileno()))  # after the read: these bytes'

    def write(self, path: str, data: bytes) -> None:
        """Written beside the target, then renamed: a killed writer never leaves a half-written
        file under the final name (the leftovers carry ``.tmp-`` and are swept up)."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)  # a full disk must not keep the part that did fit
            raise

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def register(register_source: Callable[[Source], Source]) -> None:
    """Entry point of the ``smolql.sources`` group."""
    register_source(LocalSource())
