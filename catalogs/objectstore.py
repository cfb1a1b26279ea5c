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
from smolql.sources import Head, Signature, Source

SCHEMES = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "abfs", "abfs": "abfs", "http": "http",
           "https": "https"}  # fmt: skip
EXTRAS = {"s3": "s3fs", "gcs": "gcsfs", "abfs": "adlfs", "http": "aiohttp", "https": "aiohttp"}
_HINTS = {
    "s3": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS or STORAGE_EMULATOR_HOST",
    "abfs": "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME with credentials",
}
RETRIES = 5
RETRY_S = 20.0  # no new attempt after this long: the SDK below has retried on its own too
BACKOFF_S = 0.05
T = TypeVar("T")


def _protocol(uri: str) -> str:
    return SCHEMES.get(uri.partition("://")[0].lower(), "")


_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
        "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME")  # fmt: skip
_FILESYSTEMS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _filesystem(uri: str) -> Any:
    """One fsspec filesystem per protocol and endpoint/credential environment, without a
    listings cache (a cached listing would answer for an object that changed)."""
    import fsspec

    protocol = _protocol(uri)
    key = (protocol, repr(fsspec.config.conf.get(protocol)), *(os.environ.get(k) for k in _ENV))
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
    except Exception as e:  # e.g. adlfs without an account: a ValueError at construction
        raise CatalogInputError(
            f"cannot reach {uri}: {e} (configure the store's account and credentials, e.g."
            f" {_HINTS.get(protocol, 'its fsspec options')})"
        ) from e


def _retrying(uri: str, call: Callable[[], T]) -> T:
    """``call()``, retried on transient failures (at most ``RETRIES`` more times, none started
    after ``RETRY_S``); every failure is an OSError naming ``uri``
    (FileNotFoundError for a missing bucket or key, PermissionError for credentials)."""
    start = time.monotonic()
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
            if attempt == RETRIES or time.monotonic() - start > RETRY_S:
                raise OSError(f"{uri}: failed after {attempt + 1} attempts: {e}") from e
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def _etag(info: dict) -> str:
    return str(info.get("ETag") or info.get("etag") or info.get("md5") or "")


def _version(uri: str, info: dict) -> str | None:
    """The identity of the object's current content: a hash of its URI, ETag and size (a
    store gives an object a new ETag whenever its content changes), or ``None`` without an
    ETag. It names one object's version, so the same photograph at two URIs is cached twice."""
    tag = _etag(info)
    if not tag:
        return None
    text = f"{uri}\0{tag}\0{int(info.get('size') or 0)}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


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
    tag = _etag(info)
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
        return self.identify(path)[0]

    def identify(self, path: str) -> tuple[Signature, str | None]:
        fs = _filesystem(path)
        info = _retrying(path, lambda: fs.info(path))
        return _signature(info), _version(path, info)

    def head(self, path: str, size: int) -> Head:
        """The object's metadata, then (with an ETag) a ranged read of its first ``size``
        bytes: probing a JPEG's header needs a few kilobytes, not the whole photograph. The
        metadata comes first, as in :meth:`read`."""
        signature, version = self.identify(path)
        if version is None:
            data, signature = self.read(path)
            return Head(data, signature, None, True)
        data = self.read_range(path, 0, min(size, signature[0]))
        return Head(data, signature, version, len(data) >= signature[0])

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
