"""Read what an image is from its header alone: format, size, orientation, JPEG layout."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from smolql.errors import DecodeError

# We enforce our own limit from the header; Pillow must not second-guess it.
Image.MAX_IMAGE_PIXELS = None
# Pillow warns about odd EXIF blocks; the image is still fine. A process-wide filter, because
# warnings.catch_warnings() swaps global state and is not safe in worker threads.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

FORMATS = {
    "JPEG": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "MPO": "jpeg",
}
_SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    """Header facts; ``width``/``height`` are as displayed (after EXIF orientation)."""

    format: str
    width: int
    height: int
    stored_width: int
    stored_height: int
    mode: str
    orientation: int
    progressive: bool | None
    subsampling: str | None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe(data: bytes, path: str) -> ImageInfo:
    """Parse the header of encoded image bytes.

    Raises :class:`DecodeError` naming ``path`` for empty, unknown or unsupported data.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)", file=path)
    try:
        im = Image.open(io.BytesIO(data))
        fmt = FORMATS.get(im.format or "")
        orientation = _orientation(im)
    except UnidentifiedImageError as e:
        raise DecodeError(
            "not a recognised image (expected JPEG, PNG, WebP, BMP or TIFF)", file=path
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DecodeError(f"unreadable image header: {e}", file=path) from e
    if fmt is None:
        raise DecodeError(f"unsupported image format {im.format}", file=path)
    sw, sh = im.size
    swap = orientation in (5, 6, 7, 8)
    is_jpeg = fmt == "jpeg"
    return ImageInfo(
        format=fmt,
        width=sh if swap else sw,
        height=sw if swap else sh,
        stored_width=sw,
        stored_height=sh,
        mode=im.mode,
        orientation=orientation,
        progressive=bool(im.info.get("progressive") or im.info.get("progression"))
        if is_jpeg
        else None,
        subsampling=_subsampling(im) if is_jpeg else None,
    )


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


def _subsampling(im: Image.Image) -> str:
    if im.mode == "L":
        return "gray"
    return _SAMPLING.get(JpegImagePlugin.get_sampling(im), "other")
