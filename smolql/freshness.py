"""What is at an image's path now: the result cache may only answer for that content.

An image value (``STRUCT(catalog, id, path, hash)``) says what a file held when it was ingested;
the file may have been replaced, truncated or deleted since, and a hand-built value may pair any
path with any hash. Before a query trusts a value's hash it checks the file's stat signature
(size, mtime, ctime, inode) against the one recorded at ingest for that very catalog row, path
and hash, as git does for its index: any write changes mtime and ctime, and a replacement also
the inode. When anything differs, or the value matches no catalog row, the file is read and
hashed, so the key is always the hash of the bytes that are there.

Files verified this way are handed to the process's :data:`~smolql.watch.WATCHER`: while the
kernel reports no change to them, later queries trust them without a ``stat`` (see
:mod:`smolql.executor.cached`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb

from smolql.sources import Signature, identify, io_threads, read
from smolql.storage.schema import image_signatures
from smolql.watch import WATCHER, Verified

HASH_BYTES = 16  # BLAKE2b-128, as ingest records it


def content_hash(data: bytes) -> str:
    """The content hash SmolQL keys images by.

    >>> content_hash(b"abc")
    'cf4ab791c62b8d2b2109c90275287816'
    """
    return hashlib.blake2b(data, digest_size=HASH_BYTES).hexdigest()


@dataclass(frozen=True)
class Expected:
    """What a file is believed to hold: ``hash`` while its stat signature is ``signature``.
    A decoder that reads the file with another signature hashes what it read instead."""

    signature: Signature
    hash: str

    def digest(self, data: bytes, signature: Signature) -> str:
        """The hash of ``data``, read under ``signature``."""
        return self.hash if signature == self.signature else content_hash(data)


@dataclass(frozen=True)
class Current:
    """An image value resolved against the file system: the hash of what is at its path now
    (or why it cannot be read), and the orientation when it is known from the catalog."""

    path: str
    hash: str | None
    expected: Expected | None
    orientation: int | None
    error: str | None = None
    as_recorded: bool = False  # the file's signature is the one recorded with its hash


def resolve(con: duckdb.DuckDBPyConnection, images: Iterable[dict]) -> dict[tuple, Current]:
    """For each distinct image value, keyed by ``(path, hash)`` as the value claims them."""
    values = {(img["path"], img["hash"]): img for img in images}
    recorded = _recorded(con, values.values())
    first = next((k[0] for k in values if isinstance(k[0], str) and k[0]), None)
    threads = io_threads(first, 1)
    items = list(values.items())
    watched = WATCHER.watch(p for p, _ in values if isinstance(p, str))  # before any stat

    def one(item: tuple[tuple, dict]) -> Current:
        img = item[1]
        return _resolve_one(img, recorded.get((img["catalog"], img["id"])))

    if threads > 1 and len(items) > 1:  # a remote source: its round trips overlap
        with ThreadPoolExecutor(threads, thread_name_prefix="smolql-fresh") as pool:
            out = {k: c for (k, _), c in zip(items, pool.map(one, items), strict=True)}
    else:
        out = {k: one((k, img)) for k, img in items}
    if watched:
        WATCHER.add(_watchable(out.values(), watched))
    return out


def _watchable(currents: Iterable[Current], watched: set[str]) -> Iterable[tuple[str, Verified]]:
    """The files found as recorded in watched folders."""
    for cur in currents:
        if cur.as_recorded and os.path.dirname(cur.path) in watched:
            yield cur.path, (cur.hash, cur.orientation, cur.expected.signature)


def _recorded(con: duckdb.DuckDBPyConnection, images: Iterable[dict]) -> dict[tuple, tuple]:
    pairs = {(img["catalog"], img["id"]) for img in images}
    return image_signatures(
        con, {(c, i) for c, i in pairs if isinstance(c, str) and isinstance(i, int)}
    )


def _resolve_one(img: dict, recorded: tuple | None) -> Current:
    path = img["path"]
    if not isinstance(path, str) or not path:
        return Current(str(path), None, None, None, "the image value has no file path")
    try:
        now, version = identify(path)
    except OSError as e:
        return Current(path, None, None, None, f"{path}: cannot read file: {e.strerror or e}")
    if recorded is not None:
        r_path, r_hash, size, mtime_ns, ctime_ns, inode, orientation = recorded
        trusted = r_path == path and r_hash == img["hash"] and ctime_ns is not None
        if trusted and now == (size, mtime_ns, ctime_ns, inode):
            return Current(path, r_hash, Expected(now, r_hash), orientation, as_recorded=True)
    if version is not None:  # the store vouches for this content: no need to fetch it here
        return Current(path, version, Expected(now, version), None)
    try:
        data, after = read(path)
    except OSError as e:
        return Current(path, None, None, None, f"{path}: cannot read file: {e.strerror or e}")
    digest = content_hash(data)
    return Current(path, digest, Expected(after, digest), None)
