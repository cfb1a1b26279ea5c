"""Manifest catalogs: a Parquet, CSV or JSON Lines file listing images (relative paths resolved
against the manifest's folder) whose other columns become typed catalog columns."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smolql
from smolql.errors import CatalogInputError


@pytest.fixture
def layout(tmp_path: Path, photographs: list[Path]) -> tuple[Path, list[Path]]:
    """Photographs in ``images/`` and ``more/``, and a folder ``meta/`` for manifests."""
    files = []
    for i, f in enumerate(photographs[:6]):
        folder = tmp_path / ("images" if i % 2 == 0 else "more")
        folder.mkdir(exist_ok=True)
        files.append(Path(shutil.copy2(f, folder / f.name)))
    (tmp_path / "meta").mkdir()
    return tmp_path, files


def rows(files: list[Path], root: Path) -> list[dict]:
    return [
        {
            "path": f"../{f.relative_to(root)}",
            "label_id": i,
            "weight": 0.5 + i,
            "split": "train" if i < 4 else "test",
            "taken": dt.date(2024, 1, 1 + i),
        }
        for i, f in enumerate(files)
    ]


def test_a_parquet_manifest_gives_typed_columns_and_relative_paths(layout, tmp_path):
    root, files = layout
    manifest = root / "meta" / "photos.parquet"
    pq.write_table(pa.Table.from_pylist(rows(files, root)), manifest)
    with smolql.connect(str(tmp_path / "m.duckdb")) as con:
        s = con.create_catalog("photos", str(manifest), renditions=(), progress=False)
        assert s.images == len(files) and s.skipped == 0
        got = con.sql("SELECT path, label_id, weight, split, taken FROM photos ORDER BY label_id")
        assert got["path"].to_pylist() == [str(f) for f in files]
        assert got["taken"].to_pylist()[2] == dt.date(2024, 1, 3)
        types = dict(con.duckdb.execute("SELECT column_name, column_type FROM (DESCRIBE photos)")
                     .fetchall())  # fmt: skip
        assert types["label_id"] == "BIGINT" and types["weight"] == "DOUBLE"
        assert types["split"] == "VARCHAR" and types["taken"] == "DATE"
        warnings.simplefilter("ignore")
        test = con.sql(
            "SELECT file, classify(image).label AS label FROM photos WHERE split = 'test'"
        )
        assert len(test) == 2 and all(test["label"].to_pylist())


def test_csv_and_json_lines_manifests_give_the_same_catalog(layout, tmp_path):
    root, files = layout
    data = rows(files, root)
    for r in data:
        r["taken"] = r["taken"].isoformat()
    csv = root / "meta" / "photos.csv"
    csv.write_text(
        "path,label_id,weight,split,taken\n"
        + "".join(
            f"{r['path']},{r['label_id']},{r['weight']},{r['split']},{r['taken']}\n" for r in data
        )
    )
    jsonl = root / "meta" / "photos.jsonl"
    jsonl.write_text("".join(json.dumps({**r, "uri": r.pop("path")}) + "\n" for r in data))
    query = "SELECT file, label_id, weight, split FROM {} ORDER BY file"
    with smolql.connect(str(tmp_path / "c.duckdb")) as con:
        con.create_catalog("a", str(csv), renditions=(), progress=False)
        con.create_catalog("b", str(jsonl), renditions=(), progress=False)
        a = con.sql(query.format("a")).to_pylist()
        assert a == con.sql(query.format("b")).to_pylist()
        assert len(a) == len(files) and {r["split"] for r in a} == {"train", "test"}


def test_refresh_rereads_the_manifest(layout, tmp_path):
    root, files = layout
    manifest = root / "meta" / "photos.parquet"
    pq.write_table(pa.Table.from_pylist(rows(files, root)), manifest)
    with smolql.connect(str(tmp_path / "r.duckdb")) as con:
        con.create_catalog("photos", str(manifest), renditions=(), progress=False)
        fewer = rows(files, root)[:3]
        for r in fewer:
            r["split"] = "val"
        pq.write_table(pa.Table.from_pylist(fewer), manifest)
        s = con.refresh_catalog("photos", progress=False)
        assert s.images == 3 and s.removed == len(files) - 3
        assert con.sql("SELECT DISTINCT split FROM photos")["split"].to_pylist() == ["val"]


def test_manifest_errors_name_the_file_and_the_problem(layout, tmp_path):
    root, files = layout
    meta = root / "meta"
    no_path = meta / "nopath.csv"
    no_path.write_text("name,label\nx.jpg,1\n")
    twice = meta / "twice.csv"
    twice.write_text(f"path\n../{files[0].relative_to(root)}\n{files[0]}\n")
    clash = meta / "clash.csv"
    clash.write_text(f"path,width\n{files[0]},3\n")
    missing = meta / "missing.csv"
    missing.write_text(f"path\n{files[0]}\nnot-there.jpg\n")
    with smolql.connect(str(tmp_path / "e.duckdb")) as con:
        with pytest.raises(CatalogInputError, match=r"no path or uri column.*nopath.csv"):
            con.create_catalog("a", str(no_path), progress=False)
        with pytest.raises(CatalogInputError, match=rf"lists {files[0]} twice.*twice.csv"):
            con.create_catalog("b", str(twice), progress=False)
        with pytest.raises(CatalogInputError, match=r"clash with catalog columns"):
            con.create_catalog("c", str(clash), progress=False)
        with pytest.raises(CatalogInputError, match=r"manifest not found"):
            con.create_catalog("d", str(meta / "absent.parquet"), progress=False)
        s = con.create_catalog("e", str(missing), renditions=(), progress=False)
        assert s.images == 1 and s.skipped == 1
        assert s.reasons[0][0] == str(meta / "not-there.jpg")


def test_the_cli_creates_a_catalog_from_a_manifest(layout, tmp_path, capsys):
    from smolql.cli import main

    root, files = layout
    manifest = root / "meta" / "photos.parquet"
    pq.write_table(pa.Table.from_pylist(rows(files, root)), manifest)
    db = str(tmp_path / "cli.duckdb")
    assert main(["catalog", "create", "photos", str(manifest), "--db", db]) == 0
    assert f"{len(files)} images" in capsys.readouterr().out
    with smolql.connect(db) as con:
        got = con.sql("SELECT count(*) AS n, sum(label_id) AS s FROM photos").to_pylist()
    assert got == [{"n": len(files), "s": sum(range(len(files)))}]
