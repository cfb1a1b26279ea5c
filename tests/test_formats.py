"""Every readable format and JPEG layout is ingested with right metadata and upright renditions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_jpegs
from images import write_variants
from PIL import Image, ImageOps


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    import smolql

    folder = tmp_path_factory.mktemp("variants")
    paths = write_variants(real_jpegs()[3], folder / "images")
    con = smolql.connect(str(folder / "v.duckdb"))
    summary = con.create_catalog("v", str(folder / "images"), renditions=["64:png"], progress=False)
    rows = {r["file"]: r for r in con.sql("SELECT * FROM v").to_pylist()}
    rend = dict(
        con.duckdb.execute(
            "SELECT i.file, r.path FROM smolql.renditions r JOIN v i ON i.id = r.image_id"
        ).fetchall()
    )
    yield summary, rows, rend, paths
    con.close()


def test_all_variants_are_ingested(variants):
    summary, rows, _, paths = variants
    assert summary.skipped == 0, summary.reasons
    assert set(rows) == set(paths)


@pytest.mark.parametrize(
    ("name", "fmt", "progressive", "subsampling"),
    [
        ("baseline444.jpg", "jpeg", False, "4:4:4"),
        ("baseline422.jpg", "jpeg", False, "4:2:2"),
        ("baseline420.jpg", "jpeg", False, "4:2:0"),
        ("progressive.jpg", "jpeg", True, "4:2:0"),
        ("gray.jpg", "jpeg", False, "gray"),
        ("rgb16.png", "png", None, None),
        ("image.webp", "webp", None, None),
        ("image.bmp", "bmp", None, None),
        ("image.tiff", "tiff", None, None),
    ],
)
def test_format_and_jpeg_layout_are_recorded(variants, name, fmt, progressive, subsampling):
    _, rows, _, _ = variants
    row = rows[name]
    assert (row["format"], row["progressive"], row["subsampling"]) == (
        fmt,
        progressive,
        subsampling,
    )


@pytest.mark.parametrize(
    "name",
    [
        "rotated6.jpg",
        "rotated3.jpg",
        "cmyk.jpg",
        "palette.png",
        "alpha.png",
        "rgb16.png",
        "gray16.png",
        "image.webp",
        "image.tiff",
        "progressive.jpg",
    ],
)
def test_renditions_match_pillows_upright_rgb_view(variants, name):
    _, rows, rend, paths = variants
    with Image.open(paths[name]) as im:
        upright = ImageOps.exif_transpose(im)
        if upright.mode == "I;16" or upright.mode == "I":
            upright = Image.fromarray((np.asarray(upright) >> 8).astype(np.uint8))
        expected = upright.convert("RGB").resize(Image.open(rend[name]).size, Image.Resampling.BOX)
    got = np.asarray(Image.open(rend[name]).convert("RGB"), dtype=np.int16)
    assert got.shape == np.asarray(expected).shape
    # DCT-scaled decode + area filter vs Pillow's box filter: close, not equal. A wrong
    # orientation or colour conversion is off by tens of levels.
    assert np.abs(got - np.asarray(expected, dtype=np.int16)).mean() < 5.0
    if name == "rotated3.jpg":
        assert np.abs(got - np.asarray(expected, dtype=np.int16)[::-1, ::-1]).mean() > 15
    assert (rows[name]["width"], rows[name]["height"]) == upright.size


def test_orientation_swaps_displayed_size(variants):
    _, rows, _, _ = variants
    r6, r3 = rows["rotated6.jpg"], rows["rotated3.jpg"]
    assert (r6["orientation"], r3["orientation"]) == (6, 3)
    assert (r6["width"], r6["height"]) == (r3["height"], r3["width"])
