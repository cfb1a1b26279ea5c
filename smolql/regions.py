"""``crop()`` boxes as SQL gives them -> the pixel region to decode.

The rule, stated once (README "SQL with classification"):

- a NULL argument gives a NULL result, silently, as any SQL function does;
- fractional boxes are rounded outward to whole pixels (the smallest pixel box covering them);
- nested crops compose: each box is relative to the one it crops, and must lie inside it;
- a box with a negative or non-finite corner or a size that is not positive, or one outside its
  image or enclosing box, is invalid: NULL with a warning naming the file and the box (an error
  under ``on_error = 'fail'``), exactly like an image that cannot be decoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from smolql.ops.transform import Rect

Number = int | float | Decimal


class InvalidBox(ValueError):
    """A crop box that selects no pixels of its image."""


def region(values: Sequence[Number | None]) -> Rect | None:
    """The pixel region of nested boxes ``(x, y, w, h)*``, innermost first; None if any value
    is NULL.

    >>> region([1.5, 2.5, 100.7, 100.2])
    Rect(x=1, y=2, w=102, h=101)
    >>> region([10, 10, 100, 100, 5, 5, 20, 20])
    Rect(x=15, y=15, w=20, h=20)
    >>> region([None, 0, 10, 10]) is None
    True
    """
    if any(v is None for v in values):
        return None
    boxes = [_pixels(values[i : i + 4]) for i in range(0, len(values), 4)]
    x, y, w, h = boxes[0]
    for bx, by, bw, bh in boxes[1:]:
        if bx + bw > w or by + bh > h:
            raise InvalidBox(
                f"crop box {_text((bx, by, bw, bh))} lies outside the enclosing crop"
                f" {_text((x, y, w, h))}"
            )
        x, y, w, h = x + bx, y + by, bw, bh
    return Rect(x, y, w, h)


def _pixels(box: Sequence[Number]) -> tuple[int, int, int, int]:
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InvalidBox(f"invalid crop box {_text(box)}: not a finite number")
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise InvalidBox(f"invalid crop box {_text(box)}: needs x, y >= 0 and width, height > 0")
    x0, y0 = math.floor(x), math.floor(y)
    return x0, y0, math.ceil(x + w) - x0, math.ceil(y + h) - y0


def _text(box: Sequence[Number]) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in box) + ")"
