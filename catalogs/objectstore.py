"""The object-storage catalog source: ``s3://``, ``gs://``, ``az://`` (``abfs://``) and
``http(s)://`` images through fsspec (s3fs, gcsfs, adlfs: optional extras).

A catalog location is a prefix (``s3://bucket/photos/``, listed recursively); an image is one
object's URI. Endpoints and credentials come the way fsspec and the cloud SDKs take them
(``FSSPEC_S3_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` ..., or
``fsspec.config.conf``). An object's signature is (size, last-modified ns, a hash of its ETag,
0): a refresh or a query sees any overwrite, even one of the same size; an object without an
ETag (a plain web server) is re-read and hashed at every check instead. Transient failures
(connection resets, timeouts, 5xx, throttling) are retried with exponential backoff, on top of
the SDK's own retries; a missing bucket or key and missing credentials fail at once, with the
URI.

Registered through the ``smolql.sources`` entry-point group, as any connector would be.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from smolql.catalogs.local import is_image_name

from smolql.errors import CatalogInputError
from smolql.sources import Signature, Source

SCHEMES = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "abfs", "abfs": "abfs", "http": "http",
           "https": "https"}  # fmt: skip
EXTRAS = {"s3": "s3fs", "gcs": "gcsfs", "abfs": "adlfs", "http": "aiohttp", "https": "aiohttp"}
RETRIES = 5
BACKOFF_S = 0.05
T = TypeVar("T")


def _protocol(uri: str) -> str:
    return SCHEMES.get(uri.partition("://")[0].lower(), "")


_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")
_FILESYSTEMS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _filesystem(uri: str) -> Any:
    """One fsspec filesystem per protocol and endpoint/credential environment, without a
    listings cache (a cached listing would answer for an object that changed)."""
    import fsspec

    protocol = _protocol(uri)
    key = (protocol, *(os.environ.get(k) for k in _ENV))
    try:
        with _LOCK:
            if key not in _FILESYSTEMS:
                _FILESYSTEMS[key] = fsspec.filesystem(
                    protocol, use_listings_cache=False, skip_instance_cache=True
                )
            return _FILESYSTEMS[key]
    except ImportError as e:
        raise CatalogInputError(
            f"reading {uri} needs {EXTRAS[protocol]}: pip install {EXTRAS[protocol]}"
        ) from e


def _retrying(uri: str, call: Callable[[], T]) -> T:
    """``call()``, retried on transient failures; every failure is an OSError naming ``uri``
    (FileNotFoundError for a missing bucket or key, PermissionError for credentials)."""
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except (FileNotFoundError, IsADirectoryError) as e:
            raise FileNotFoundError(f"{uri}: not found ({e})") from e
        except PermissionError as e:
            raise PermissionError(f"{uri}: access denied ({e})") from e
        except Exception as e:
            if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                raise PermissionError(
                    f"{uri}: no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or"
                    f" the provider's equivalent): {e}"
                ) from e
            if attempt == RETRIES:
                raise OSError(f"{uri}: failed after {RETRIES + 1} attempts: {e}") from e
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def _signature(info: dict) -> Signature:
    """(size, last-modified ns, a hash of the ETag, 0). Without an ETag (a plain web server)
    a same-size overwrite within the same second would look unchanged, so such an object gets
    a signature that never matches an earlier one: every check re-reads and hashes it."""
    modified = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
    if isinstance(modified, str) or modified is None:
        modified = info.get("Last-Modified") or modified
        try:
            modified = parsedate_to_datetime(modified) if isinstance(modified, str) else None
        except (TypeError, ValueError):
            modified = None
    ns = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else 0
    tag = str(info.get("ETag") or info.get("etag") or info.get("md5") or "")
    if not tag:
        return (int(info.get("size") or 0), ns, time.time_ns(), 1)  # unverifiable
    tag_int = int.from_bytes(hashlib.sha1(tag.encode()).digest()[:7], "big")
    return (int(info.get("size") or 0), ns, tag_int, 0)


class ObjectStoreSource(Source):
    name = "objectstore"
    concurrency = 16  # requests in flight at once (freshness checks, ingest, decoding)

    def claims(self, location: str) -> bool:
        return "://" in location and _protocol(location) != ""

    def resolve(self, location: str) -> str:
        """The prefix, checked to exist (its bucket reachable with these credentials)."""
        fs = _filesystem(location)
        if _protocol(location) in ("http", "https"):
            raise CatalogInputError(
                f"{location}: an http(s) address cannot be listed; list its images in a"
                " manifest instead"
            )
        try:
            found = _retrying(location, lambda: fs.exists(location))
        except OSError as e:
            raise CatalogInputError(f"catalog source {location}: {e}") from e
        if not found:
            raise CatalogInputError(f"catalog source {location}: no such bucket or prefix")
        return location.rstrip("/") + "/"

    def list(self, location: str) -> list[str]:
        fs = _filesystem(location)
        scheme = location.partition("://")[0]
        keys = _retrying(location, lambda: fs.find(location))
        return sorted(f"{scheme}://{k}" for k in keys if is_image_name(k))

    def stat(self, path: str) -> Signature:
        fs = _filesystem(path)
        return _signature(_retrying(path, lambda: fs.info(path)))

    def read(self, path: str) -> tuple[bytes, Signature]:
        """The object's bytes and its signature, looked up *before* the bytes: an overwrite in
        between leaves an older signature with newer bytes, which the next check sees as a
        change and reads again (the other order could pair new metadata with old bytes and
        answer for them later). A length that does not match is read again, a few times."""
        fs = _filesystem(path)
        for _ in range(3):
            before = _signature(_retrying(path, lambda: fs.info(path)))
            data = _retrying(path, lambda: fs.cat_file(path))
            if len(data) == before[0]:
                return data, before
        raise OSError(f"{path}: the object kept changing while it was read")

    def write(self, path: str, data: bytes) -> None:
        """One PUT: an object appears whole or not at all."""
        fs = _filesystem(path)
        _retrying(path, lambda: fs.pipe_file(path, data))

    def remove(self, path: str) -> None:
        fs = _filesystem(path)
        with contextlib.suppress(FileNotFoundError):
            _retrying(path, lambda: fs.rm_file(path))

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of an object (a ranged read: e.g. a JPEG's header)."""
        fs = _filesystem(path)
        return _retrying(path, lambda: fs.cat_file(path, start=start, end=end))


def register(register_source: Callable[[Source], Source]) -> None:
    """Entry point of the ``smolql.sources`` group."""
    register_source(ObjectStoreSource())
