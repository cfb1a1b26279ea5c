"""Rendition specs: ``SHORTSIDE:FORMAT[:QUALITY]``.

>>> RenditionSpec.parse("161:jpeg:75")
RenditionSpec(short_side=161, format='jpeg', quality=75)
>>> str(RenditionSpec.parse("161:PNG"))
'161:png'
"""

from __future__ import annotations

from dataclasses import dataclass

from smolql.errors import CatalogInputError

DEFAULT_RENDITIONS = ("161:jpeg:75", "161:jpeg:95", "161:png")
FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
LOSSY = {"jpeg", "webp"}


@dataclass(frozen=True)
class RenditionSpec:
    short_side: int
    format: str
    quality: int | None = None

    @classmethod
    def parse(cls, text: str) -> RenditionSpec:
        parts = text.strip().lower().split(":")
        if len(parts) not in (2, 3):
            raise CatalogInputError(
                f"rendition spec {text!r} is not SHORTSIDE:FORMAT[:QUALITY] (e.g. 161:jpeg:75)"
            )
        side, fmt = parts[0], {"jpg": "jpeg"}.get(parts[1], parts[1])
        if not side.isdigit() or not 8 <= int(side) <= 4096:
            raise CatalogInputError(f"rendition spec {text!r}: short side must be 8..4096 px")
        if fmt not in FORMATS:
            raise CatalogInputError(
                f"rendition spec {text!r}: format must be one of {', '.join(FORMATS)}"
            )
        quality = None
        if len(parts) == 3:
            if fmt not in LOSSY:
                raise CatalogInputError(f"rendition spec {text!r}: {fmt} takes no quality")
            if not parts[2].isdigit() or not 1 <= int(parts[2]) <= 100:
                raise CatalogInputError(f"rendition spec {text!r}: quality must be 1..100")
            quality = int(parts[2])
        elif fmt in LOSSY:
            quality = 90
        return cls(int(side), fmt, quality)

    def __str__(self) -> str:
        lossy = self.format in LOSSY
        return f"{self.short_side}:{self.format}" + (f":{self.quality}" if lossy else "")

    @property
    def slug(self) -> str:
        """A folder name for this spec's files."""
        return str(self).replace(":", "-")

    @property
    def suffix(self) -> str:
        return FORMATS[self.format]


def parse_specs(texts: tuple[str, ...] | list[str]) -> tuple[RenditionSpec, ...]:
    specs = tuple(RenditionSpec.parse(t) for t in texts)
    if len(set(specs)) != len(specs):
        raise CatalogInputError(f"duplicate rendition specs in {list(texts)}")
    return specs
