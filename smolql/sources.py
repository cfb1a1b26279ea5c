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
from dataclasses import dataclass

from smolql.errors import CatalogInputError
from smolql.registry import Registry

ENTRY_POINT_GROUP = "smolql.sources"
Signature = tuple[int, int, int, int]
TMP_MARK = ".tmp-"  # in the name of a file being written (swept up if its writer died)


@dataclass(frozen=True)
class Head:
    """An image's first bytes (all of them when ``complete``), the signature they were read
    under, and ``version``: an identity of the content that the store vouches for (an object
    store's ETag) without SmolQL reading every byte, or ``None`` (then the content hash of the
    whole file is the identity)."""

    data: bytes
    signature: Signature
    version: str | None
    complete: bool


class Source(ABC):
    """Lists a catalog location's images and reads them."""

    name: str
    concurrency: int = 1  # requests worth overlapping (a remote store's round trips: more)

    @abstractmethod
    def claims(self, location: str) -> bool:
        """Whether this source serves ``location`` (a catalog location or an image path). The
        answer must depend on the location's scheme and extension alone: SmolQL remembers it
        per (scheme, extension), as every image read asks."""

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

    def identify(self, path: str) -> tuple[Signature, str | None]:
        """The signature and, where the store vouches for content, its version identity
        (see :class:`Head`); local files have none."""
        return self.stat(path), None

    def head(self, path: str, size: int) -> Head:
        """At least the first ``size`` bytes. Sources without version identities return the
        whole file (its hash is the identity); object stores a ranged read."""
        data, signature = self.read(path)
        return Head(data, signature, None, True)

    def write(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path`` whole or not at all (renditions); sources that only
        read say so."""
        raise CatalogInputError(f"the {self.name} source cannot store files ({path})")

    def remove(self, path: str) -> None:
        """Delete ``path`` if it is there."""
        raise CatalogInputError(f"the {self.name} source cannot delete files ({path})")


_REGISTRY: Registry[Source] = Registry(ENTRY_POINT_GROUP, "catalog source", CatalogInputError)


_CLAIMED: dict[tuple[str, str], Source] = {}  # (scheme, extension) -> the source claiming it


def register_source(source: Source, *, replace: bool = False) -> Source:
    """Add a source under ``source.name``; a second one of that name is an error unless
    ``replace``. Sources registered later are asked first (a plugin may claim what the local
    source would)."""
    _CLAIMED.clear()
    return _REGISTRY.register(source, replace=replace)


def sources() -> Mapping[str, Source]:
    return _REGISTRY.all()


def _kind(location: str) -> tuple[str, str]:
    """(scheme, extension) of a location: what a source's claim may depend on.

    >>> _kind("s3://b/p/cat.JPG"), _kind("/photos/list.parquet"), _kind("/photos/.hidden")
    (('s3', '.jpg'), ('', '.parquet'), ('', ''))
    """
    i = location.find("://")
    name = location.rpartition("/")[2]
    dot = name.rfind(".")
    return (location[:i].lower() if i >= 0 else ""), (name[dot:].lower() if dot > 0 else "")


def source_for(location: str) -> Source:
    """The source that serves ``location``."""
    kind = _kind(location)
    found = _CLAIMED.get(kind)
    if found is not None:
        return found
    for source in reversed(sources().values()):
        if source.claims(location):
            _CLAIMED[kind] = source
            return source
    raise CatalogInputError(
        f"no catalog source reads {location!r} (installed: {', '.join(sources()) or 'none'})"
    )


def read(path: str) -> tuple[bytes, Signature]:
    """An image's bytes and signature, through its source."""
    return source_for(path).read(path)


def stat(path: str) -> Signature:
    return source_for(path).stat(path)


def identify(path: str) -> tuple[Signature, str | None]:
    return source_for(path).identify(path)


def head(path: str, size: int) -> Head:
    return source_for(path).head(path, size)


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
