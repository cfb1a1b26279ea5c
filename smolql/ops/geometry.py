"""Choose what to decode: the region a model's centre crop (or an ROI) needs, and the DCT scale.

Pure functions of the image's header facts and the transform; nothing is decoded here.
The resize geometry follows torchvision's ``Resize(int)`` + ``CenterCrop`` on a PIL image exactly,
so that with ``scale_denom=1`` the result equals torchvision's reference transform bit for bit.
"""

from __future__ import annotations

import math

from smolql.imaging.decode import dct_denominator
from smolql.imaging.orient import stored_rect
from smolql.ops.steps import Axis, Crop, Decode, ImagePlan, Orient, ResizeNormalize
from smolql.ops.transform import Rect, SourceInfo, Transform


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """torchvision's ``Resize(short)``: short side to ``short``, long side truncated.

    >>> resized_size(500, 375, 256)
    (341, 256)
    """
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def needed_range(scale: float, first: int, count: int, in_size: int) -> tuple[int, int]:
    """Input pixels ``[lo, hi)`` that outputs ``first .. first + count - 1`` read (Pillow's
    antialiased bilinear filter: support grows with the downscale factor)."""
    support = max(scale, 1.0)
    lo = max(0, int((first + 0.5) * scale - support + 0.5))
    hi = min(in_size, int((first + count - 1 + 0.5) * scale + support + 0.5))
    return lo, hi


def plan_image(
    info: SourceInfo,
    transform: Transform,
    *,
    roi: Rect | None = None,
    scale_denom: int | str = "auto",
    partial: bool = True,
) -> ImagePlan:
    """Plan one image: decode (region, DCT scale), views (crop, orientation), resize."""
    swap = info.orientation in (5, 6, 7, 8)
    disp_w, disp_h = (info.height, info.width) if swap else (info.width, info.height)
    roi = roi or Rect(0, 0, disp_w, disp_h)
    if roi.x + roi.w > disp_w or roi.y + roi.h > disp_h:
        raise ValueError(f"region {roi.as_tuple()} is outside the {disp_w}x{disp_h} image")
    d = _denominator(info, roi, transform, scale_denom)
    # libjpeg's scaled output is ceil(size / d); the ROI scales with it.
    dec_w, dec_h = math.ceil(info.width / d), math.ceil(info.height / d)
    fx = (dec_h if swap else dec_w) / disp_w
    fy = (dec_w if swap else dec_h) / disp_h
    vx, vy = (
        min(int(roi.x * fx), round(disp_w * fx) - 1),
        min(int(roi.y * fy), round(disp_h * fy) - 1),
    )
    vw = max(1, min(round(roi.w * fx), round(disp_w * fx) - vx))
    vh = max(1, min(round(roi.h * fy), round(disp_h * fy) - vy))

    # Geometry of the reference transform, on the unscaled ROI.
    w2, h2 = resized_size(roi.w, roi.h, transform.resize)
    c = transform.crop
    left, top = round((w2 - c) / 2.0), round((h2 - c) / 2.0)  # as torchvision (half to even)
    x_axis = Axis(vw / w2, left, vw, 0)
    y_axis = Axis(vh / h2, top, vh, 0)
    x0, x1 = needed_range(x_axis.scale, left, c, vw)
    y0, y1 = needed_range(y_axis.scale, top, c, vh)
    x_axis = Axis(x_axis.scale, left, vw, x0)
    y_axis = Axis(y_axis.scale, top, vh, y0)

    displayed = (vx + x0, vy + y0, x1 - x0, y1 - y0)
    region = Rect(*stored_rect(*displayed, info.orientation, dec_w, dec_h))
    views: list[Crop | Orient] = []
    if partial and info.format == "jpeg":
        decode = Decode("jpeg", dec_w, dec_h, d, region)
    else:
        decode = Decode(info.format, dec_w, dec_h, d)
        views.append(Crop(region))
    if info.orientation != 1:
        views.append(Orient(info.orientation))
    mul, add = transform.mul_add
    resize = ResizeNormalize(x_axis, y_axis, c, c, mul, add)
    return ImagePlan(decode, tuple(views), resize)


def _denominator(info: SourceInfo, roi: Rect, t: Transform, scale_denom: int | str) -> int:
    if info.format != "jpeg":
        return 1
    if scale_denom == "auto":
        # The largest DCT scale-down that keeps the short side >= the resize: never enlarges.
        return dct_denominator(min(roi.w, roi.h), t.resize)
    if scale_denom not in (1, 2, 4, 8):
        raise ValueError(f"scale_denom must be 'auto', 1, 2, 4 or 8, not {scale_denom!r}")
    return int(scale_denom)
