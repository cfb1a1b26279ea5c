"""The preprocessing operators. Each declares the tensor it produces before it runs
(``output``), so a pipeline can be checked and costed, and its batch buffers preallocated;
``apply`` then does the work with the parameters chosen in :mod:`smolql.ops.geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from smolql import _fused
from smolql.imaging.decode import decode_jpeg, decode_other
from smolql.imaging.orient import orient_view
from smolql.ops.transform import Rect, TensorSpec


def _hwc(h: int, w: int) -> TensorSpec:
    return TensorSpec((h, w, 4), "uint8", "HWC")


@dataclass(frozen=True)
class Decode:
    """Decode to RGBX: a JPEG at ``1/scale_denom`` scale, only ``region`` (stored, scaled px)
    if given; other formats whole, through OpenCV."""

    format: str
    width: int  # the decoded full image, stored orientation, after DCT scaling
    height: int
    scale_denom: int = 1
    region: Rect | None = None

    def output(self) -> TensorSpec:
        r = self.region
        return _hwc(r.h, r.w) if r else _hwc(self.height, self.width)

    def apply(self, data: bytes) -> np.ndarray:
        shape = self.output().shape
        if self.format == "jpeg":
            region = self.region.as_tuple() if self.region else None
            out = np.empty(shape, np.uint8)
            return decode_jpeg(data, scale_denom=self.scale_denom, region=region, out=out)
        rgbx = cv2.cvtColor(decode_other(data), cv2.COLOR_RGB2RGBA)
        if rgbx.shape != shape:
            raise ValueError(
                f"decoded {rgbx.shape[1]}x{rgbx.shape[0]}, header said {shape[1]}x{shape[0]}"
            )
        return rgbx


@dataclass(frozen=True)
class Crop:
    """Take a region of a decoded image (a view, no copy)."""

    region: Rect

    def output(self, inp: TensorSpec) -> TensorSpec:
        h, w = inp.shape[:2]
        r = self.region
        if r.x + r.w > w or r.y + r.h > h:
            raise ValueError(f"crop {r.as_tuple()} outside {w}x{h}")
        return _hwc(r.h, r.w)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        r = self.region
        return pixels[r.y : r.y + r.h, r.x : r.x + r.w]


@dataclass(frozen=True)
class Orient:
    """Turn stored pixels into displayed pixels (EXIF orientation 1..8), as a view."""

    orientation: int

    def output(self, inp: TensorSpec) -> TensorSpec:
        h, w = inp.shape[:2]
        return _hwc(w, h) if self.orientation in (5, 6, 7, 8) else _hwc(h, w)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        return orient_view(pixels, self.orientation)


@dataclass(frozen=True)
class Axis:
    """One axis of a resize: output pixel ``xx`` samples input ``(xx + 0.5) * scale``; we make
    outputs ``out_offset ..``; the input array starts at virtual input pixel ``origin``."""

    scale: float
    out_offset: int
    in_size: int
    origin: int

    def as_tuple(self) -> tuple[float, int, int, int]:
        return (self.scale, self.out_offset, self.in_size, self.origin)


@dataclass(frozen=True)
class ResizeNormalize:
    """Antialiased bilinear resize on uint8 (Pillow-exact), fused with ``(x/255 - mean)/std``
    and the HWC -> CHW transpose, written straight into a batch slot."""

    x: Axis
    y: Axis
    height: int
    width: int
    mul: tuple[float, ...]
    add: tuple[float, ...]

    def output(self, inp: TensorSpec) -> TensorSpec:
        if inp.dtype != "uint8" or inp.shape[2] != 4:
            raise ValueError(f"resize takes uint8 RGBX, got {inp}")
        return TensorSpec((3, self.height, self.width), "float32", "CHW")

    def apply(self, pixels: np.ndarray, out: np.ndarray) -> None:
        _fused.resize_normalize(
            pixels, out, self.x.as_tuple(), self.y.as_tuple(), self.mul, self.add
        )


@dataclass(frozen=True)
class ImagePlan:
    """The operators for one image, in order: a decode, optional crop and orientation views,
    and the fused resize + normalise."""

    decode: Decode
    views: tuple[Crop | Orient, ...]
    resize: ResizeNormalize

    def output(self) -> TensorSpec:
        """Fold the declared outputs through the chain; raises if a step cannot take its input."""
        spec = self.decode.output()
        for view in self.views:
            spec = view.output(spec)
        return self.resize.output(spec)

    @property
    def decoded_pixels(self) -> int:
        shape = self.decode.output().shape
        return shape[0] * shape[1]

    def run(self, data: bytes, out: np.ndarray) -> None:
        pixels = self.decode.apply(data)
        for view in self.views:
            pixels = view.apply(pixels)
        self.resize.apply(pixels, out)
