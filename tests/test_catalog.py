"""Catalog creation over the 500 real sample JPEGs: columns, labels, renditions, idempotence."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from conftest import MANIFEST, SAMPLE, sample_files
from PIL import Image

from smolql.errors import CatalogInputError


@pytest.mark.slow
def test_every_sample_image_is_ingested_with_its_metadata(imagenet):
    con, summary = imagenet
    assert (summary.images, summary.skipped, summary.processed) == (500, 0, 500)
    assert summary.line("imagenet").startswith("imagenet: 500 images, 0 skipped")
    rows = con.sql("SELECT * FROM imagenet ORDER BY id").to_pylist()
    assert [r["id"] for r in rows] == list(range(1, 501))
    first = rows[0]
    for column in (
        "id",
        "path",
        "image",
        "format",
        "width",
        "height",
        "bytes",
        "mtime",
        "hash",
        "orientation",
        "progressive",
        "subsampling",
    ):
        assert column in first
    path = SAMPLE / first["file"]
    with Image.open(path) as im:
        assert (first["width"], first["height"]) == im.size
    assert first["path"] == str(path.resolve()) and os.path.isabs(first["path"])
    assert first["bytes"] == path.stat().st_size
    assert first["format"] == "jpeg" and first["progressive"] is False
    assert first["image"] == {
        "catalog": "imagenet",
        "id": 1,
        "path": str(path.resolve()),
        "hash": first["hash"],
    }
    assert len({r["hash"] for r in rows}) == 500


@pytest.mark.slow
def test_subsampling_is_read_from_the_jpeg_header(imagenet):
    con, _ = imagenet
    counts = dict(
        con.duckdb.execute("SELECT subsampling, count(*) FROM imagenet GROUP BY 1").fetchall()
    )
    assert counts["4:4:4"] > 300 and counts["4:2:0"] > 50 and counts["gray"] > 0
    gray = con.sql("SELECT path FROM imagenet WHERE subsampling = 'gray' LIMIT 1").to_pylist()
    with Image.open(gray[0]["path"]) as im:
        assert im.mode == "L"


@pytest.mark.slow
def test_labels_csv_is_joined_on_file_name(imagenet):
    con, _ = imagenet
    rows = con.sql("SELECT file, class_index, synset, name FROM imagenet ORDER BY id").to_pylist()
    manifest = {
        line.split(",")[0]: line.strip().split(",", 3)
        for line in MANIFEST.read_text().splitlines()[1:]
    }
    assert all(r["class_index"] == int(manifest[r["file"]][1]) for r in rows)
    assert rows[0]["name"] == "tench"


@pytest.mark.slow
def test_renditions_are_recorded_with_short_side_161(imagenet):
    con, _ = imagenet
    rows = con.sql(
        "SELECT r.*, i.width AS iw, i.height AS ih FROM smolql.renditions r"
        " JOIN imagenet i ON i.id = r.image_id WHERE r.catalog = 'imagenet'"
    ).to_pylist()
    assert len(rows) == 1500
    assert {r["spec"] for r in rows} == {"161:jpeg:75", "161:jpeg:95", "161:png"}
    for r in rows:
        assert min(r["width"], r["height"]) == min(161, r["iw"], r["ih"])  # never enlarged
        assert abs(r["width"] / r["height"] - r["iw"] / r["ih"]) < 0.02
        assert os.path.getsize(r["path"]) == r["bytes"]
    sizes = {
        s: b
        for s, b in con.duckdb.execute(
            "SELECT spec, avg(bytes) FROM smolql.renditions GROUP BY spec"
        ).fetchall()
    }
    assert sizes["161:jpeg:75"] < sizes["161:jpeg:95"] < sizes["161:png"]


@pytest.mark.slow
def test_renditions_are_antialiased_downscales_of_the_original(imagenet):
    con, _ = imagenet
    row = con.sql(
        "SELECT i.path, r.path AS rpath FROM imagenet i JOIN smolql.renditions r"
        " ON r.image_id = i.id AND r.spec = '161:png' WHERE i.id = 7"
    ).to_pylist()[0]
    original = np.asarray(Image.open(row["path"]).convert("RGB"))
    small = np.asarray(Image.open(row["rpath"]).convert("RGB"))
    area = cv2.resize(original, small.shape[1::-1], interpolation=cv2.INTER_AREA)
    nearest = cv2.resize(original, small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    err_area = np.abs(area.astype(int) - small).mean()
    err_nearest = np.abs(nearest.astype(int) - small).mean()
    assert err_area < 1.0 < err_nearest  # lossless PNG of an area-filtered downscale


@pytest.mark.slow
def test_rerun_and_refresh_do_nothing_for_up_to_date_files(imagenet):
    con, _ = imagenet
    again = con.create_catalog("imagenet", str(SAMPLE), labels=str(MANIFEST), progress=False)
    assert (again.processed, again.unchanged, again.images) == (0, 500, 500)
    assert con.refresh_catalog("imagenet", progress=False).processed == 0


@pytest.mark.slow
def test_sql_over_catalogs_is_full_duckdb(imagenet):
    con, _ = imagenet
    con.sql(
        "CREATE OR REPLACE TABLE favourites AS SELECT * FROM (VALUES (1, 'yes'), (3, 'no'))"
        " t(id, verdict)"
    )
    joined = con.sql(
        "SELECT i.file, f.verdict FROM imagenet i JOIN favourites f USING (id) ORDER BY id"
    ).to_pylist()
    assert [r["verdict"] for r in joined] == ["yes", "no"]
    window = con.sql(
        "WITH ranked AS (SELECT id, width, rank() OVER (ORDER BY width * height DESC, id) AS r"
        " FROM imagenet) SELECT id FROM ranked WHERE r <= 3 ORDER BY r"
    ).to_pylist()
    expected = con.duckdb.execute(
        "SELECT id FROM smolql.images WHERE catalog = 'imagenet'"
        " ORDER BY width * height DESC, id LIMIT 3"
    ).fetchall()
    assert [r["id"] for r in window] == [i for (i,) in expected]
    grouped = con.sql(
        "SELECT subsampling, count(*) AS n FROM imagenet GROUP BY ALL HAVING n > 0"
    ).num_rows
    assert grouped >= 3


def test_refresh_picks_up_added_changed_and_deleted_files(con, small_dir):
    con.create_catalog("photos", str(small_dir), progress=False)
    before = {r["file"]: r for r in con.sql("SELECT * FROM photos").to_pylist()}
    files = sorted(small_dir.iterdir())
    files[0].unlink()
    changed = files[1]
    changed.write_bytes(sample_files(20)[15].read_bytes())
    os.utime(changed, (1_000_000_000, 1_000_000_000))
    added = small_dir / "sub" / "new.jpg"
    added.parent.mkdir()
    added.write_bytes(sample_files(20)[16].read_bytes())
    summary = con.refresh_catalog("photos", progress=False)
    assert (summary.removed, summary.processed, summary.unchanged) == (1, 2, 10)
    after = {r["file"]: r for r in con.sql("SELECT * FROM photos").to_pylist()}
    assert files[0].name not in after and "new.jpg" in after
    assert after[changed.name]["id"] == before[changed.name]["id"]
    assert after[changed.name]["hash"] != before[changed.name]["hash"]
    assert after["new.jpg"]["path"] == str(added)
    assert (
        con.duckdb.execute(
            "SELECT count(*) FROM smolql.renditions WHERE catalog = 'photos'"
        ).fetchone()[0]
        == 36
    )
    rendition_files = [
        os.path.join(root, n)
        for root, _, names in os.walk(con.renditions.catalog_dir("photos"))
        for n in names
    ]
    assert len(rendition_files) == 36  # replaced and deleted images' renditions are gone


def test_glob_source_and_custom_renditions(con, small_dir):
    names = sorted(p.name for p in small_dir.iterdir())
    pattern = f"{names[1][:4]}*"  # a glob that picks some of the photographs, not all
    expected = len(list(small_dir.glob(pattern)))
    summary = con.create_catalog(
        "some",
        str(small_dir / pattern),
        renditions=["96:jpeg:80", "200:webp:70"],
        progress=False,
    )
    assert summary.images == expected > 0
    specs = con.duckdb.execute(
        "SELECT spec, min(least(width, height)) FROM smolql.renditions GROUP BY spec"
    ).fetchall()
    assert dict(specs) == {"96:jpeg:80": 96, "200:webp:70": 200}


def test_catalog_input_errors_are_clear(con, small_dir, tmp_path):
    with pytest.raises(CatalogInputError, match="not a directory"):
        con.create_catalog("x", str(tmp_path / "nope"))
    with pytest.raises(CatalogInputError, match="SHORTSIDE:FORMAT"):
        con.create_catalog("x", str(small_dir), renditions=["jpeg"])
    with pytest.raises(CatalogInputError, match="plain SQL identifier"):
        con.create_catalog("bad name", str(small_dir))
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    with pytest.raises(CatalogInputError, match="did you mean 'photos'"):
        con.refresh_catalog("phtos")
    with pytest.raises(CatalogInputError, match="another definition"):
        con.create_catalog("photos", str(tmp_path))


def test_drop_removes_rows_view_and_renditions_but_not_sources(con, small_dir):
    con.create_catalog("photos", str(small_dir), progress=False)
    folder = con.renditions.catalog_dir("photos")
    assert os.path.isdir(folder)
    con.drop_catalog("photos")
    assert con.catalogs() == [] and not os.path.exists(folder)
    assert len(list(small_dir.iterdir())) == 12
    assert con.duckdb.execute("SELECT count(*) FROM smolql.images").fetchone()[0] == 0


def test_renditions_go_to_the_shared_folder_smolql_renditions_names(
    small_dir, tmp_path, monkeypatch
):
    import smolql

    shared = tmp_path / "shared"
    monkeypatch.setenv("SMOLQL_RENDITIONS", str(shared))
    with smolql.connect(str(tmp_path / "s.duckdb")) as con:
        con.create_catalog("c", str(small_dir), renditions=["96:jpeg:80"], progress=False)
        paths = [p for (p,) in con.duckdb.execute("SELECT path FROM smolql.renditions").fetchall()]
    assert paths and all(p.startswith(str(shared / "s.duckdb.renditions")) for p in paths)
    assert all(os.path.exists(p) for p in paths)
    assert not (tmp_path / "s.duckdb.renditions").exists()
