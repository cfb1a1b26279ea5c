"""Value types shared by the preprocessing operators."""

from __future__ import annotations

from dataclasses import dataclass

from smolql.errors import QueryError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TensorSpec:
    """What an operator produces: shape, element type and memory layout.

    >>> TensorSpec((3, 224, 224), "float32", "CHW").nbytes
    602112
    """

    shape: tuple[int, ...]
    dtype: str
    layout: str

    @property
    def nbytes(self) -> int:
        size = {"uint8": 1, "float32": 4}[self.dtype]
        for dim in self.shape:
            size *= dim
        return size


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle ``x, y, width, height``."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0 or self.x < 0 or self.y < 0:
            raise QueryError(f"invalid region {self.as_tuple()}: needs x, y >= 0, w, h > 0")

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    @property
    def area(self) -> int:
        return self.w * self.h


@dataclass(frozen=True)
class Transform:
    """A classifier's standard preprocessing, as torchvision writes it:
    ``Resize(resize)`` (short side), ``CenterCrop(crop)``, ``ToTensor()``, ``Normalize(mean, std)``.

    >>> Transform(256, 224).output
    TensorSpec(shape=(3, 224, 224), dtype='float32', layout='CHW')
    """

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"crop {self.crop} must be positive and at most resize {self.resize}")

    @property
    def output(self) -> TensorSpec:
        return TensorSpec((3, self.crop, self.crop), "float32", "CHW")

    @property
    def mul_add(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``pixel * mul + add`` equal to ``(pixel / 255 - mean) / std``."""
        mul = tuple(1.0 / (255.0 * s) for s in self.std)
        add = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return mul, add


@dataclass(frozen=True)
class SourceInfo:
    """What planning needs to know about one stored image."""

    format: str
    width: int  # as stored (before EXIF orientation)
    height: int
    orientation: int = 1
