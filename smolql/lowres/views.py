"""Training views: an original and its rendition-degraded twin, cropped identically.

The degradation is exactly the catalog's rendition pipeline (the same decode, area
downscale to the short side and encoder at the same format and quality); the student later
sees the upscaled crop of it, as a query on the rendition does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from smolql.imaging.decode import decode_other, decode_rgb
from smolql.imaging.encode import encode, shrink_to_short_side
from smolql.imaging.probe import probe
from smolql.ingest.definition import RenditionSpec
from smolql.sources import read


@dataclass(frozen=True)
class Pair:
    """An image as the teacher sees it and as the rendition degrades it, both CHW uint8."""

    original: torch.Tensor
    degraded: torch.Tensor


def load_pair(path: str, rendition: RenditionSpec, max_short_side: int) -> Pair:
    """Decode ``path`` (DCT-scaled down to about ``max_short_side`` at most, so memory stays
    bounded for large photographs) and make its rendition twin."""
    data, _ = read(path)
    info = probe(data, path)
    # The rendition is made as ingest makes it: from a decode at least twice its short side.
    full = decode_rgb(data, info, path, min_short_side=2 * rendition.short_side)
    small = shrink_to_short_side(full, rendition.short_side)
    degraded = decode_other(encode(small, rendition.format, rendition.quality))
    teacher = decode_rgb(data, info, path, min_short_side=max_short_side)
    return Pair(_chw(teacher), _chw(degraded))


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class Box:
    """A crop in relative coordinates (top, left, height, width in 0..1) and a flip."""

    top: float
    left: float
    height: float
    width: float
    flip: bool

    @classmethod
    def random(cls, rng: np.random.Generator, aspect: float, min_area: float = 0.25) -> Box:
        """RandomResizedCrop's distribution: ``min_area``-100% of the area, aspect 3/4..4/3."""
        for _ in range(10):
            area = rng.uniform(min_area, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = math.sqrt(area * ratio / aspect)  # relative to the image width
            h = math.sqrt(area / ratio * aspect)
            if w <= 1 and h <= 1:
                return cls(rng.uniform(0, 1 - h), rng.uniform(0, 1 - w), h, w, rng.random() < 0.5)
        return cls(0.0, 0.0, 1.0, 1.0, bool(rng.random() < 0.5))

    @classmethod
    def center(cls, aspect: float, ratio: float, flip: bool = False) -> Box:
        """The evaluation view: a centred square of ``ratio`` times the short side (e.g.
        224/256, as Resize(256) + CenterCrop(224))."""
        if aspect >= 1:  # taller than wide
            w, h = ratio, ratio / aspect
        else:
            w, h = ratio * aspect, ratio
        return cls((1 - h) / 2, (1 - w) / 2, h, w, flip)

    def apply(self, image: torch.Tensor, size: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as tf

        _, h, w = image.shape
        top, left = round(self.top * h), round(self.left * w)
        ch, cw = max(1, round(self.height * h)), max(1, round(self.width * w))
        out = tf.resized_crop(image, top, left, ch, cw, [size, size], antialias=True)
        return tf.horizontal_flip(out) if self.flip else out


def batch_views(
    pairs: list[Pair], boxes: list[Box], size: int, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (teacher, student) float batches of the same crops."""
    teacher = torch.stack([b.apply(p.original, size) for p, b in zip(pairs, boxes, strict=True)])
    student = torch.stack([b.apply(p.degraded, size) for p, b in zip(pairs, boxes, strict=True)])
    return (teacher.float() - mean) / std, (student.float() - mean) / std
