"""Catalogs in Google Cloud Storage (``gs://``), against a real GCS JSON API server on
127.0.0.1 (gcp-storage-emulator, started here and stopped after): the same rows and answers as
the same images on local disk, renditions equal, an overwrite seen, clear errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from conftest import copied, real_jpegs
from s3server import gcs_server

import smolql
from smolql.errors import CatalogInputError

# gcsfs's experimental zonal-bucket support probes each bucket over gRPC (60 s timeouts against
# an emulator that speaks only the JSON API); it must be off before gcsfs is imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
pytest.importorskip("gcsfs", reason="gs:// catalogs need gcsfs (pip install gcsfs)")
EMULATOR = Path(os.sys.executable).parent / "gcp-storage-emulator"

ROWS = (
    "SELECT id, file, format, width, height, stored_width, stored_height, mode, bytes,"
    " orientation, progressive, subsampling FROM smolql.images WHERE catalog = ? ORDER BY id"
)
CLASSIFY = "SELECT file, classify(image).label AS label FROM {} ORDER BY file"


@pytest.fixture(scope="module")
def gcs():
    """The emulator's address, set as a user would (``STORAGE_EMULATOR_HOST``, anonymous
    access), and an fsspec filesystem for the test's own uploads."""
    if not EMULATOR.exists():
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    import fsspec

    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST",)}
    conf = fsspec.config.conf.get("gcs")
    with gcs_server() as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        fsspec.config.conf["gcs"] = {"token": "anon", "project": "test"}
        try:
            yield fsspec.filesystem("gcs", skip_instance_cache=True)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            fsspec.config.conf.pop("gcs", None) if conf is None else fsspec.config.conf.__setitem__(
                "gcs", conf
            )


def upload(fs, bucket: str, files: list[Path]) -> None:
    fs.mkdir(bucket)
    for f in files:
        fs.put_file(str(f), f"{bucket}/photos/{f.name}")


def test_a_gcs_catalog_equals_the_same_images_on_local_disk(gcs, tmp_path):
    files = real_jpegs(12)
    upload(gcs, "same", files)
    local = copied(files, tmp_path / "local")
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "g.duckdb")) as con:
        a = con.create_catalog("disk", str(local), renditions=("96:jpeg:80",), progress=False)
        b = con.create_catalog("bucket", "gs://same/photos/", renditions=(), progress=False)
        r = con.create_catalog(
            "rend", "gs://same/photos/", renditions=("96:jpeg:80",), progress=False
        )
        assert a.images == b.images == r.images == len(files)
        for name in ("bucket", "rend"):
            assert (
                con.duckdb.execute(ROWS, ["disk"]).fetchall()
                == con.duckdb.execute(ROWS, [name]).fetchall()
            )
        hashes = "SELECT file, hash FROM {} ORDER BY file"  # renditions: every byte was read
        assert (
            con.sql(hashes.format("disk")).to_pylist() == con.sql(hashes.format("rend")).to_pylist()
        )
        want = con.sql(CLASSIFY.format("disk")).to_pylist()
        assert con.sql(CLASSIFY.format("bucket")).to_pylist() == want
        # An overwrite (another photograph under the first one's name) is seen by the query.
        gcs.pipe_file(f"same/photos/{files[0].name}", files[1].read_bytes())
        got = {x["file"]: x["label"] for x in con.sql(CLASSIFY.format("bucket")).to_pylist()}
        labels = {x["file"]: x["label"] for x in want}
        assert got[files[0].name] == labels[files[1].name]
        assert con.refresh_catalog("bucket", progress=False).processed == 1


def test_missing_bucket_and_key_are_clear_errors(gcs, tmp_path):
    upload(gcs, "errs", real_jpegs(1))
    with smolql.connect(str(tmp_path / "e.duckdb")) as con:
        with pytest.raises(CatalogInputError, match="gs://nobucket/photos/"):
            con.create_catalog("c", "gs://nobucket/photos/", progress=False)
        con.create_catalog("c", "gs://errs/photos/", renditions=(), progress=False)
        gcs.rm("errs/photos", recursive=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = con.sql(CLASSIFY.format("c")).to_pylist()
        assert rows[0]["label"] is None
        assert any("gs://errs/photos/" in str(w.message) for w in caught)


def test_an_azure_location_without_an_account_is_a_clear_error(tmp_path, monkeypatch):
    """``az://`` goes through adlfs; with no account configured the SDK's ValueError becomes
    a catalog error that says what to set. (No Azure Blob server can run here: Azurite is an
    npm package; the real-server tests above cover the shared code path with S3 and GCS.)"""
    pytest.importorskip("adlfs", reason="az:// catalogs need adlfs (pip install adlfs)")
    for k in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(k, raising=False)
    with (
        smolql.connect(str(tmp_path / "a.duckdb")) as con,
        pytest.raises(CatalogInputError, match=r"az://box/photos/.*AZURE_STORAGE"),
    ):
        con.create_catalog("c", "az://box/photos/", progress=False)
