"""Downscale with an anti-aliased filter and encode renditions."""

from __future__ import annotations

import cv2
import numpy as np
from turbojpeg import TJPF_RGB, TJSAMP_420

from smolql.imaging.decode import turbo

PNG_COMPRESSION = 3


def shrink_to_short_side(pixels: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so the short side is ``short_side`` (area filter); never enlarges.

    >>> shrink_to_short_side(np.zeros((375, 500, 3), np.uint8), 161).shape
    (161, 215, 3)
    """
    h, w = pixels.shape[:2]
    if min(h, w) <= short_side:
        return pixels
    scale = short_side / min(h, w)
    size = (short_side, round(h * scale)) if w <= h else (round(w * scale), short_side)
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def encode(pixels: np.ndarray, fmt: str, quality: int | None) -> bytes:
    """Encode RGB uint8 pixels as ``jpeg``, ``png`` or ``webp``."""
    if fmt == "jpeg":
        return turbo().encode(
            pixels, quality=quality or 90, pixel_format=TJPF_RGB, jpeg_subsample=TJSAMP_420
        )
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    else:
        params = [cv2.IMWRITE_WEBP_QUALITY, quality or 90]
    ok, buf = cv2.imencode("." + fmt, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {fmt}")
    return buf.tobytes()
