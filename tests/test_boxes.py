"""Boxes from annotation files: a hand-made COCO file (and the same boxes as CSV) for three
sample images, attached to a catalog and classified crop by crop with ROI pushdown."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from conftest import SAMPLE, SAMPLE_MISSING

import smolql
from smolql.errors import CatalogInputError

BOXES = Path(__file__).parent / "fixtures" / "boxes"
FILES = ("n01440764_tench.JPEG", "n02134084_ice_bear.JPEG", "n02190166_fly.JPEG")
CROPS = (
    "SELECT b.box_id, b.label, classify(crop(c.image, b.x, b.y, b.w, b.h)).label AS got"
    " FROM photos c JOIN {} b ON b.image_id = c.id ORDER BY b.file, b.x"
)


@pytest.fixture
def con(tmp_path: Path):
    if not all((SAMPLE / f).exists() for f in FILES):
        pytest.skip(SAMPLE_MISSING)
    folder = tmp_path / "images"
    folder.mkdir()
    for f in (*FILES, "n01484850_great_white_shark.JPEG"):  # one image without boxes
        shutil.copy2(SAMPLE / f, folder / f)
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "b.duckdb")) as c:
        c.create_catalog("photos", str(folder), renditions=(), progress=False)
        yield c


def test_coco_boxes_are_classified_crop_by_crop_with_roi_pushdown(con):
    assert con.attach_boxes("photos", str(BOXES / "coco.json")) == "photos_boxes"
    boxes = con.sql("SELECT * FROM photos_boxes ORDER BY box_id").to_pylist()
    assert [b["box_id"] for b in boxes] == [11, 21, 31, 32]
    assert all(b["image_id"] is not None for b in boxes)
    assert boxes[0]["x"] == 35 and boxes[0]["w"] == 393 and boxes[0]["category_id"] == 1
    got = con.sql(CROPS.format("photos_boxes")).to_pylist()
    objects = [g for g in got if g["label"] != "background"]
    assert [g["got"] for g in objects] == [g["label"] for g in objects]  # each object found
    plan = "\n".join(con.sql("EXPLAIN " + CROPS.format("photos_boxes"))["plan"].to_pylist())
    assert "ROI pushdown: partial JPEG decode of crop(...) region" in plan


def test_a_csv_of_boxes_gives_the_same_crops_as_the_coco_file(con):
    con.attach_boxes("photos", str(BOXES / "coco.json"))
    con.attach_boxes("photos", str(BOXES / "boxes.csv"), name="from_csv")
    a = [(g["label"], g["got"]) for g in con.sql(CROPS.format("photos_boxes")).to_pylist()]
    b = [(g["label"], g["got"]) for g in con.sql(CROPS.format("from_csv")).to_pylist()]
    assert a == b and len(a) == 4


def test_boxes_errors_are_clear(con, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(CatalogInputError, match=r"not a COCO annotation file.*bad.json"):
        con.attach_boxes("photos", str(bad))
    short = tmp_path / "short.csv"
    short.write_text("file,x,y\na.jpg,1,2\n")
    with pytest.raises(CatalogInputError, match=r"missing: w, h, label"):
        con.attach_boxes("photos", str(short))
    with pytest.raises(CatalogInputError, match=r"annotation file not found"):
        con.attach_boxes("photos", str(tmp_path / "absent.json"))
    with pytest.raises(CatalogInputError, match=r"nope"):
        con.attach_boxes("nope", str(BOXES / "coco.json"))


def test_the_cli_attaches_boxes(con, capsys):
    from smolql.cli import main

    db = con.database
    con.close()
    assert main(["catalog", "boxes", "photos", str(BOXES / "coco.json"), "--db", db]) == 0
    assert "photos_boxes: 4 boxes, 4 on images of photos" in capsys.readouterr().out


def test_a_toml_catalog_file_declares_source_labels_and_boxes(tmp_path, capsys):
    from smolql.cli import main

    if not all((SAMPLE / f).exists() for f in FILES):
        pytest.skip(SAMPLE_MISSING)
    (tmp_path / "imgs").mkdir()
    for f in FILES:
        shutil.copy2(SAMPLE / f, tmp_path / "imgs" / f)
    shutil.copy2(BOXES / "coco.json", tmp_path / "coco.json")
    (tmp_path / "labels.csv").write_text("file,habitat\n" + "".join(f"{f},x{i}\n" for i, f in
                                         enumerate(FILES)))  # fmt: skip
    toml = tmp_path / "defs" / "animals.toml"
    toml.parent.mkdir()
    toml.write_text(
        'name = "animals"\nsource = "../imgs"\nrenditions = ["96:jpeg:80"]\n'
        'labels = "../labels.csv"\nboxes = "../coco.json"\n'
    )
    db = str(tmp_path / "t.duckdb")
    assert main(["catalog", "create", "--from", str(toml), "--db", db]) == 0
    assert "animals: 3 images" in capsys.readouterr().out
    with smolql.connect(db) as con:
        assert con.sql("SELECT count(*) AS n FROM animals_boxes").to_pylist() == [{"n": 4}]
        assert sorted(con.sql("SELECT habitat FROM animals")["habitat"].to_pylist()) == [
            "x0", "x1", "x2"
        ]  # fmt: skip
        specs = con.duckdb.execute("SELECT DISTINCT spec FROM smolql.renditions").fetchall()
        assert specs == [("96:jpeg:80",)]
        again = con.create_catalog_from(str(toml), progress=False)  # resumes: nothing to do
        assert again.processed == 0
    toml.write_text('name = "bad"\nsorce = "x"\n')
    with pytest.raises(CatalogInputError, match=r"unknown key 'sorce'.*did you mean 'source'"):
        smolql.connect(":memory:").create_catalog_from(str(toml))


def test_boxes_name_their_image_by_as_much_of_its_path_as_it_takes(tmp_path):
    """Two folders hold different photographs under one file name: a box given with its
    folder joins that image only, a bare file name that fits both is refused, naming it."""
    if not all((SAMPLE / f).exists() for f in FILES):
        pytest.skip(SAMPLE_MISSING)
    for sub, f in (("a", FILES[0]), ("b", FILES[1])):
        (tmp_path / "imgs" / sub).mkdir(parents=True)
        shutil.copy2(SAMPLE / f, tmp_path / "imgs" / sub / "same.JPEG")
    (tmp_path / "ok.csv").write_text(
        "file,x,y,w,h,label\n./a/same.JPEG,35,128,393,172,tench\n"
        "imgs\\b\\same.JPEG,10,175,250,140,ice bear\n"
    )
    (tmp_path / "bare.csv").write_text("file,x,y,w,h,label\nsame.JPEG,35,128,393,172,tench\n")
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "s.duckdb")) as con:
        con.create_catalog("photos", str(tmp_path / "imgs"), renditions=(), progress=False)
        con.attach_boxes("photos", str(tmp_path / "ok.csv"))
        got = con.sql(CROPS.format("photos_boxes")).to_pylist()
        assert [(g["label"], g["got"]) for g in got] == [
            ("tench", "tench"),
            ("ice bear", "ice bear"),
        ]
        with pytest.raises(CatalogInputError, match=r"'same.JPEG' fits several images"):
            con.attach_boxes("photos", str(tmp_path / "bare.csv"), name="bare_boxes")
        views = "SELECT view_name FROM duckdb_views() WHERE NOT internal"
        assert "bare_boxes" not in {r[0] for r in con.duckdb.execute(views).fetchall()}
        # A second box set under its own name leaves the first intact; drop removes both.
        (tmp_path / "one.csv").write_text("file,x,y,w,h,label\nb/same.JPEG,0,0,50,50,corner\n")
        con.attach_boxes("photos", str(tmp_path / "one.csv"), name="corners")
        assert con.sql("SELECT count(*) AS n FROM photos_boxes")["n"].to_pylist() == [2]
        assert con.sql("SELECT count(*) AS n FROM corners")["n"].to_pylist() == [1]
        con.drop_catalog("photos")
        left = {r[0] for r in con.duckdb.execute(views).fetchall()}
        assert not {"photos_boxes", "corners"} & left
        tables = "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'boxes%'"
        assert con.duckdb.execute(tables).fetchall() == []
