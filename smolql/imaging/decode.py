"""Decode a whole image to displayed RGB uint8 pixels.

JPEG goes through SmolQL's libjpeg-turbo extension (optionally DCT-scaled or cropped); other
formats through OpenCV, with Pillow as the fallback for what OpenCV cannot read.
"""

from __future__ import annotations

import io
import math
import threading

import cv2
import numpy as np
from PIL import Image
from turbojpeg import TurboJPEG

from smolql import _jpeg
from smolql.errors import DecodeError
from smolql.imaging.orient import apply_orientation
from smolql.imaging.probe import ImageInfo

_turbo: TurboJPEG | None = None
_turbo_lock = threading.Lock()
DCT_DENOMINATORS = (8, 4, 2)


def turbo() -> TurboJPEG:
    """The process-wide PyTurboJPEG binding, used to encode (it makes a handle per call)."""
    global _turbo
    with _turbo_lock:
        if _turbo is None:
            _turbo = TurboJPEG()
        return _turbo


def dct_denominator(short_side: int, min_short_side: int | None) -> int:
    """Largest DCT scale-down 1/d that keeps the short side at least ``min_short_side``.

    >>> dct_denominator(1000, 161), dct_denominator(375, 161), dct_denominator(375, 322)
    (4, 2, 1)
    """
    if not min_short_side:
        return 1
    for d in DCT_DENOMINATORS:
        if math.ceil(short_side / d) >= min_short_side:
            return d
    return 1


def decode_rgb(
    data: bytes, info: ImageInfo, path: str, *, min_short_side: int | None = None
) -> np.ndarray:
    """Decode to an (H, W, 3) uint8 RGB array as displayed.

    With ``min_short_side``, JPEGs may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
    while the result's short side stays at least that large.
    """
    try:
        if info.format == "jpeg":
            d = dct_denominator(min(info.stored_width, info.stored_height), min_short_side)
            stored = decode_jpeg(data, scale_denom=d)
        else:
            stored = decode_other(data)
    except DecodeError:
        raise
    except (OSError, ValueError, cv2.error) as e:
        raise DecodeError(f"corrupt or truncated {info.format.upper()}: {e}", file=path) from e
    return apply_orientation(stored, info.orientation)


def decode_jpeg(
    data: bytes,
    *,
    scale_denom: int = 1,
    region: tuple[int, int, int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode a JPEG as stored (no orientation) to RGB, optionally scaled and cropped.

    ``region`` is ``(x, y, width, height)`` in scaled pixels; ``out``, if given, must have the
    result's shape and receives the pixels. Raises ``ValueError`` with libjpeg's message.
    """
    if out is None:
        w, h = _jpeg.output_size(data, scale_denom=scale_denom, region=region)
        out = np.empty((h, w, 3), np.uint8)
    _jpeg.decode_into(data, out, scale_denom=scale_denom, region=region)
    return out


def decode_other(data: bytes) -> np.ndarray:
    """Decode a non-JPEG image as stored to RGB (OpenCV, then Pillow for what it cannot read)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        return _decode_pillow(data)
    return to_rgb8(pixels)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's decoded array (gray, BGR or BGRA; 8 or 16 bit) as RGB uint8; alpha dropped."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = cv2.normalize(pixels, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def _decode_pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB"))
