"""Make real test images of every kind from the shared sample JPEGs."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def sof_offset(data: bytes) -> int:
    """Byte offset of a JPEG's SOFn marker."""
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return i
        i += 2 + length
    raise ValueError("no SOF marker")


def with_header_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with the frame header claiming another size (the scan is unchanged)."""
    i = sof_offset(data)
    return data[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[i + 9 :]


def jpeg_with_orientation(rgb: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def write_variants(src: Path, folder: Path) -> dict[str, Path]:
    """Write one image in every format and layout SmolQL must read; return name -> path."""
    rgb = np.asarray(Image.open(src).convert("RGB"))
    im = Image.fromarray(rgb)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, writer) -> None:
        out[name] = folder / name
        writer(out[name])

    save("baseline444.jpg", lambda p: im.save(p, quality=90, subsampling=0))
    save("baseline422.jpg", lambda p: im.save(p, quality=90, subsampling=1))
    save("baseline420.jpg", lambda p: im.save(p, quality=90, subsampling=2))
    save("progressive.jpg", lambda p: im.save(p, quality=90, progressive=True))
    save("gray.jpg", lambda p: im.convert("L").save(p, quality=90))
    save("cmyk.jpg", lambda p: im.convert("CMYK").save(p, quality=90))
    save("rgb8.png", lambda p: im.save(p))
    save(
        "rgb16.png",
        lambda p: cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257),
    )
    save("palette.png", lambda p: im.convert("P", palette=Image.Palette.ADAPTIVE).save(p))
    save("alpha.png", lambda p: im.convert("RGBA").save(p))
    save(
        "gray16.png",
        lambda p: cv2.imwrite(
            str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        ),
    )
    save("image.webp", lambda p: im.save(p, quality=90))
    save("image.bmp", lambda p: im.save(p))
    save("image.tiff", lambda p: im.save(p))
    save("rotated6.jpg", lambda p: p.write_bytes(jpeg_with_orientation(rgb, 6)))
    save("rotated3.jpg", lambda p: p.write_bytes(jpeg_with_orientation(rgb, 3)))
    return out
