"""EXIF orientation: turn stored pixels into displayed pixels.

>>> import numpy as np
>>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
>>> apply_orientation(a, 6).shape
(3, 2)
"""

from __future__ import annotations

import numpy as np

_VIEWS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


def orient_view(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W[, C]) as displayed for an EXIF orientation tag 1..8, as a strided view."""
    return _VIEWS.get(orientation, _VIEWS[1])(pixels)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Like :func:`orient_view`, as a new contiguous array."""
    return np.ascontiguousarray(orient_view(pixels, orientation))


def stored_rect(
    x: int, y: int, w: int, h: int, orientation: int, stored_w: int, stored_h: int
) -> tuple[int, int, int, int]:
    """Map a rectangle in displayed coordinates to the stored image's coordinates.

    Decoding the returned rectangle and orienting it gives the displayed rectangle.

    >>> stored_rect(0, 0, 10, 20, 6, stored_w=300, stored_h=200)
    (0, 190, 20, 10)
    """
    sw, sh = stored_w, stored_h
    return {
        1: (x, y, w, h),
        2: (sw - x - w, y, w, h),
        3: (sw - x - w, sh - y - h, w, h),
        4: (x, sh - y - h, w, h),
        5: (y, x, h, w),
        6: (y, sh - x - w, h, w),
        7: (sw - y - h, sh - x - w, h, w),
        8: (sw - y - h, x, h, w),
    }.get(orientation, (x, y, w, h))
