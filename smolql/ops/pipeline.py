"""One image through the preprocessing pipeline: header -> plan -> decode -> resize/normalise."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from smolql import _jpeg
from smolql.config import PILLOW_PIXEL_LIMIT
from smolql.errors import DecodeError
from smolql.freshness import Expected
from smolql.imaging.probe import probe
from smolql.ops.geometry import plan_image
from smolql.ops.steps import ImagePlan
from smolql.ops.transform import Rect, SourceInfo, TensorSpec, Transform
from smolql.sources import read

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageRef:
    """An image to preprocess. ``key`` travels with it into the batch (e.g. a catalog id);
    ``orientation`` None means "read it from the file's EXIF"; ``roi`` is in displayed pixels;
    with ``expect``, :meth:`Preprocessor.run` returns the content hash of the bytes it decoded."""

    key: object
    path: str
    orientation: int | None = None
    roi: Rect | None = None
    expect: Expected | None = None


@dataclass(frozen=True)
class Preprocessor:
    """A model's transform plus how to decode: DCT scale (``"auto"`` never enlarges the result;
    1 is exact) and whether to decode only the needed region (``partial``)."""

    transform: Transform
    scale_denom: int | str = 1
    partial: bool = True
    max_pixels: int = PILLOW_PIXEL_LIMIT

    @property
    def output(self) -> TensorSpec:
        return self.transform.output

    def plan(self, data: bytes, ref: ImageRef) -> ImagePlan:
        """Read the header and choose region and scale for one image; nothing is decoded."""
        info = source_info(data, ref, self.max_pixels)
        _check_pixels(info.width, info.height, self.max_pixels, ref)
        try:
            return plan_image(
                info,
                self.transform,
                roi=ref.roi,
                scale_denom=self.scale_denom,
                partial=self.partial,
            )
        except ValueError as e:
            raise DecodeError(str(e), file=ref.path) from e

    def run(self, ref: ImageRef, out: np.ndarray) -> str | None:
        """Read, plan and preprocess one image into ``out`` (a (3, C, C) float32 slot); return
        the content hash of the bytes decoded when ``ref.expect`` asks for it."""
        try:
            data, signature = read(ref.path)
        except OSError as e:
            raise DecodeError(f"cannot read file: {e.strerror or e}", file=ref.path) from e
        plan = self.plan(data, ref)
        try:
            plan.run(data, out)
        except ValueError as e:
            raise DecodeError(f"corrupt or truncated image: {e}", file=ref.path) from e
        return ref.expect.digest(data, signature) if ref.expect is not None else None


def _check_pixels(width: int, height: int, max_pixels: int, ref: ImageRef) -> None:
    if width * height > max_pixels:
        raise DecodeError(
            f"{width}x{height} exceeds the pixel limit of {max_pixels:,}", file=ref.path
        )


def source_info(data: bytes, ref: ImageRef, max_pixels: int = PILLOW_PIXEL_LIMIT) -> SourceInfo:
    """Header facts: JPEG and PNG parsed directly, other formats (and EXIF) through Pillow. A
    PNG over ``max_pixels`` is refused before Pillow sees it: Pillow decodes every pixel of a
    PNG to look for EXIF after its image data."""
    if data[:2] == b"\xff\xd8":
        try:
            width, height = _jpeg.output_size(data)
        except ValueError as e:
            raise DecodeError(f"corrupt JPEG header: {e}", file=ref.path) from e
        orientation = ref.orientation
        if orientation is None:
            orientation = probe(data, ref.path).orientation
        return SourceInfo("jpeg", width, height, orientation)
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        _check_pixels(width, height, max_pixels, ref)
        if ref.orientation is not None:
            return SourceInfo("png", width, height, ref.orientation)
    info = probe(data, ref.path)
    orientation = info.orientation if ref.orientation is None else ref.orientation
    return SourceInfo(info.format, info.stored_width, info.stored_height, orientation)
