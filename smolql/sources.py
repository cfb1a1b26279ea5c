"""Catalog sources: where images live, and the one way SmolQL reads them.

A :class:`Source` turns a catalog location into image paths (``list``), and reads one image's
bytes with a *signature*: four integers that change whenever the content may have changed
(for local files: size, mtime, ctime and inode). The signature is what ingest records and what
:mod:`smolql.freshness` checks before the result cache may answer.

Sources register by name in a plain dict, through the ``smolql.sources`` entry-point group,
exactly as a third party's would; the built-in local folder/glob source is
``smolql.catalogs.local:register``. A location is served by the first source that claims it
(the local source claims everything without a ``scheme://``).

>>> source_for("/photos/cat.jpg").name
'local'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from smolql.errors import CatalogInputError
from smolql.registry import Registry

ENTRY_POINT_GROUP = "smolql.sources"
Signature = tuple[int, int, int, int]
TMP_MARK = ".tmp-"  # in the name of a file being written (swept up if its writer died)


class Source(ABC):
    """Lists a catalog location's images and reads them."""

    name: str
    concurrency: int = 1  # requests worth overlapping (a remote store's round trips: more)

    @abstractmethod
    def claims(self, location: str) -> bool:
        """Whether this source serves ``location`` (a catalog location or an image path)."""

    @abstractmethod
    def resolve(self, location: str) -> str:
        """The normalised location (absolute, checked that it can exist), or an error."""

    @abstractmethod
    def list(self, location: str) -> list[str]:
        """Paths of the image files at ``location``, sorted."""

    @abstractmethod
    def stat(self, path: str) -> Signature:
        """The image's signature; ``OSError`` if it cannot be reached."""

    @abstractmethod
    def read(self, path: str) -> tuple[bytes, Signature]:
        """The image's bytes and the signature they were read under; ``OSError`` if it
        cannot be read."""

    def write(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path`` whole or not at all (renditions); sources that only
        read say so."""
        raise CatalogInputError(f"the {self.name} source cannot store files ({path})")

    def remove(self, path: str) -> None:
        """Delete ``path`` if it is there."""
        raise CatalogInputError(f"the {self.name} source cannot delete files ({path})")


_REGISTRY: Registry[Source] = Registry(ENTRY_POINT_GROUP, "catalog source", CatalogInputError)


def register_source(source: Source, *, replace: bool = False) -> Source:
    """Add a source under ``source.name``; a second one of that name is an error unless
    ``replace``. Sources registered later are asked first (a plugin may claim what the local
    source would)."""
    return _REGISTRY.register(source, replace=replace)


def sources() -> Mapping[str, Source]:
    return _REGISTRY.all()


def source_for(location: str) -> Source:
    """The source that serves ``location``."""
    for source in reversed(sources().values()):
        if source.claims(location):
            return source
    raise CatalogInputError(
        f"no catalog source reads {location!r} (installed: {', '.join(sources()) or 'none'})"
    )


def read(path: str) -> tuple[bytes, Signature]:
    """An image's bytes and signature, through its source."""
    return source_for(path).read(path)


def stat(path: str) -> Signature:
    return source_for(path).stat(path)


def io_threads(path: str | None, cpu_threads: int) -> int:
    """Threads for work that reads ``path``'s kind of image: the CPU's share, or more where
    the source's round trips are worth overlapping (object storage)."""
    if not path:
        return cpu_threads
    try:
        return max(cpu_threads, source_for(path).concurrency)
    except CatalogInputError:
        return cpu_threads


def is_remote(path: str) -> bool:
    return "://" in path


def write(path: str, data: bytes) -> None:
    source_for(path).write(path, data)


def remove(path: str) -> None:
    source_for(path).remove(path)


def files_under(folder: str) -> list[str]:
    """The files a source lists under a remote folder; none if it is missing or unreadable
    (then every file there counts as absent)."""
    try:
        return source_for(folder).list(folder.rstrip("/") + "/")
    except (OSError, CatalogInputError):
        return []
