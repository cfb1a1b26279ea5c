"""The per-file ingest step: read, hash, probe, decode once, write every rendition.

It runs in worker threads: libjpeg-turbo, OpenCV and hashlib release the GIL.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from datetime import datetime

from smolql.errors import DecodeError, StorageFullError
from smolql.freshness import content_hash
from smolql.imaging.decode import decode_rgb
from smolql.imaging.encode import encode, shrink_to_short_side
from smolql.imaging.probe import ImageInfo, probe
from smolql.ingest.definition import RenditionSpec
from smolql.sources import Signature, head, read, write

# Header bytes to probe an image without renditions from a store that vouches for its content
# (object storage): 16 KiB holds 97% of the sample JPEGs' headers, 64 KiB all of them (large
# EXIF or ICC blocks); past that the whole object is read.
HEADER_BYTES = (16 << 10, 64 << 10)


@dataclass(frozen=True)
class Rendition:
    spec: str
    path: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class Ingested:
    """One image's catalog row (without id) and its renditions."""

    row: dict
    renditions: tuple[Rendition, ...]


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def ingest_file(
    path: str, specs: tuple[RenditionSpec, ...], out_dir: str, max_pixels: int
) -> Ingested | Skipped:
    """Process one file; every failure becomes a :class:`Skipped` with a readable reason."""
    try:
        return _ingest(path, specs, out_dir, max_pixels)
    except DecodeError as e:
        return Skipped(path, e.message)
    except StorageFullError:
        raise  # not this image's fault: the ingest stops, with the reason
    except PermissionError:
        return Skipped(path, "permission denied")
    except OSError as e:
        return Skipped(path, f"cannot read file: {e.strerror or e}")
    except MemoryError:
        return Skipped(path, "out of memory while decoding")
    except Exception as e:  # a decoder library choking on odd data must not stop the ingest
        return Skipped(path, f"cannot decode: {type(e).__name__}: {e}")


def _ingest(path: str, specs: tuple[RenditionSpec, ...], out_dir: str, max_pixels: int) -> Ingested:
    if specs:  # renditions need every pixel: read it all, hash it
        data, signature = read(path)  # the signature of these bytes
        info, digest = probe(data, path), content_hash(data)
    else:
        info, signature, digest = _identify(path)
    size, mtime_ns, ctime_ns, inode = signature
    if info.pixels > max_pixels:
        raise DecodeError(
            f"{info.width}x{info.height} = {info.pixels:,} pixels exceeds the limit of "
            f"{max_pixels:,} (setting max_image_pixels)",
            file=path,
        )
    renditions: tuple[Rendition, ...] = ()
    if specs:
        largest = max(s.short_side for s in specs)
        pixels = decode_rgb(data, info, path, min_short_side=2 * largest)
        renditions = tuple(_write(pixels, spec, digest, out_dir) for spec in specs)
    row = {
        "file": os.path.basename(path),
        "path": path,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "stored_width": info.stored_width,
        "stored_height": info.stored_height,
        "mode": info.mode,
        "bytes": size,
        "mtime": datetime.fromtimestamp(mtime_ns / 1e9),
        "mtime_ns": mtime_ns,
        "ctime_ns": ctime_ns,
        "inode": inode,
        "hash": digest,
        "orientation": info.orientation,
        "progressive": info.progressive,
        "subsampling": info.subsampling,
    }
    return Ingested(row, renditions)


def _identify(path: str) -> tuple[ImageInfo, Signature, str]:
    """Header facts, signature and identity of an image, from as few bytes as will do: a
    store's version identity and a ranged read of the header where it has them; otherwise the
    whole file and its content hash."""
    for size in HEADER_BYTES:
        got = head(path, size)
        if got.version is None:
            return probe(got.data, path), got.signature, content_hash(got.data)
        try:
            return probe(got.data, path), got.signature, got.version
        except DecodeError:
            if got.complete:
                raise
    data, signature = read(path)
    return probe(data, path), signature, content_hash(data)


def rendition_path(out_dir: str, spec: RenditionSpec, digest: str) -> str:
    """Content-addressed: identical files share one rendition; changed files get a new one."""
    return os.path.join(out_dir, spec.slug, digest[:2], digest + spec.suffix)


def _write(pixels, spec: RenditionSpec, digest: str, out_dir: str) -> Rendition:
    small = shrink_to_short_side(pixels, spec.short_side)
    data = encode(small, spec.format, spec.quality)
    target = rendition_path(out_dir, spec, digest)
    try:
        write(target, data)  # whole or not at all (local: temp file + rename; object store: PUT)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(
                f"no space left for renditions under {out_dir} ({e.strerror}): free space, or"
                " set SMOLQL_RENDITIONS to a folder with room; the images ingested so far are"
                " kept and a re-run continues",
                file=target,
            ) from e
        raise
    return Rendition(str(spec), target, small.shape[1], small.shape[0], len(data))
