"""Catalogs in object storage, against a real S3 API server (moto's, on 127.0.0.1, started
here and stopped after): the same catalog, renditions and classifications as the same images on
local disk; an overwrite of the same size seen by refresh and by queries; clear errors; a
server that fails 10% of requests; a bucket deleted mid-query."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import copied, real_jpegs
from s3server import Proxy, moto_server

import smolql
from smolql.errors import CatalogInputError

boto3 = pytest.importorskip("boto3", reason="the S3 tests need boto3 (pip install moto[server])")
pytest.importorskip("s3fs", reason="S3 catalogs need s3fs (pip install 's3fs')")

ROWS = (
    "SELECT id, file, format, width, height, stored_width, stored_height, mode, bytes, hash,"
    " orientation, progressive, subsampling FROM smolql.images WHERE catalog = ? ORDER BY id"
)
RENDITIONS = (
    "SELECT image_id, spec, width, height, bytes, hash, path FROM smolql.renditions"
    " WHERE catalog = ? ORDER BY image_id, spec"
)
CLASSIFY = (
    "SELECT file, classify(image).label AS label, round(classify(image).score, 4) AS s"
    " FROM {} ORDER BY file"
)


@pytest.fixture(scope="module")
def server():
    if not shutil.which("moto_server", path=str(Path(__import__("sys").executable).parent)):
        pytest.skip("moto's server is not installed (pip install 'moto[server]')")
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(server, monkeypatch):
    """Credentials and endpoint for SmolQL (through the environment, as a user would set them)
    and a boto3 client for the test's own uploads."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server)
    return boto3.client("s3", endpoint_url=server, region_name="us-east-1")


def upload(client, bucket: str, files: list[Path], prefix: str = "photos/") -> None:
    client.create_bucket(Bucket=bucket)
    for f in files:
        client.upload_file(str(f), bucket, prefix + f.name)


def rendered(con, catalog: str) -> list[tuple]:
    rows = con.duckdb.execute(RENDITIONS, [catalog]).fetchall()
    return [(*r[:-1], hashlib.sha256(Path(r[-1]).read_bytes()).hexdigest()) for r in rows]


def test_an_s3_catalog_equals_the_same_images_on_local_disk(s3, tmp_path):
    files = real_jpegs(24)
    upload(s3, "same", files)
    local = copied(files, tmp_path / "local")
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "s.duckdb")) as con:
        specs = ["96:jpeg:80", "96:png"]
        a = con.create_catalog("disk", str(local), renditions=specs, progress=False)
        b = con.create_catalog("bucket", "s3://same/photos/", renditions=specs, progress=False)
        assert a.images == b.images == len(files)
        paths = con.sql("SELECT path FROM bucket ORDER BY id").to_pylist()
        assert paths[0]["path"] == f"s3://same/photos/{files[0].name}"
        assert (
            con.duckdb.execute(ROWS, ["disk"]).fetchall()
            == con.duckdb.execute(ROWS, ["bucket"]).fetchall()
        )
        assert rendered(con, "disk") == rendered(con, "bucket")
        con.sql("SET smolql.cache = off")
        assert (
            con.sql(CLASSIFY.format("disk")).to_pylist()
            == con.sql(CLASSIFY.format("bucket")).to_pylist()
        )
        again = con.create_catalog("bucket", "s3://same/photos/", renditions=specs, progress=False)
        assert again.processed == 0 and again.unchanged == len(files)


def test_an_overwrite_of_the_same_size_is_seen_by_refresh_and_queries(s3, tmp_path):
    files = real_jpegs(6)
    upload(s3, "over", files)
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "o.duckdb")) as con:
        con.create_catalog("c", "s3://over/photos/", renditions=(), progress=False)
        before = {r["file"]: r["label"] for r in con.sql(CLASSIFY.format("c")).to_pylist()}
        # Replace the first object with another photograph cut to exactly its size.
        target = files[0].read_bytes()
        other = files[1].read_bytes()
        same_size = (other + b"\0" * len(target))[: len(target)]
        s3.put_object(Bucket="over", Key=f"photos/{files[0].name}", Body=same_size)
        after = {r["file"]: r["label"] for r in con.sql(CLASSIFY.format("c")).to_pylist()}
        assert after[files[0].name] == before[files[1].name]  # never the cached old answer
        old = con.sql(f"SELECT hash FROM c WHERE file = '{files[0].name}'").to_pylist()
        summary = con.refresh_catalog("c", progress=False)
        assert summary.processed == 1
        stored = con.sql(f"SELECT hash FROM c WHERE file = '{files[0].name}'").to_pylist()
        assert stored[0]["hash"] != old[0]["hash"]  # the object's new version
        cached = con.sql(CLASSIFY.format("c")).to_pylist()
        con.sql("SET smolql.cache = off")
        assert cached == con.sql(CLASSIFY.format("c")).to_pylist()


def test_missing_bucket_key_and_credentials_are_clear_errors(s3, tmp_path, monkeypatch):
    upload(s3, "errs", real_jpegs(2))
    with smolql.connect(str(tmp_path / "e.duckdb")) as con:
        with pytest.raises(CatalogInputError, match=r"s3://no-such-bucket/x/.*no such bucket"):
            con.create_catalog("a", "s3://no-such-bucket/x/", progress=False)
        with pytest.raises(CatalogInputError, match=r"s3://errs/nothing-here/"):
            con.create_catalog("b", "s3://errs/nothing-here/", progress=False)
        from smolql.sources import read

        with pytest.raises(FileNotFoundError, match=r"s3://errs/photos/missing.jpg: not found"):
            read("s3://errs/photos/missing.jpg")
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(CatalogInputError, match=r"s3://errs/photos/.*no credentials"):
            con.create_catalog("c", "s3://errs/photos/", progress=False)


def test_an_ingest_without_renditions_reads_headers_not_whole_objects(
    server, s3, tmp_path, monkeypatch
):
    """A catalog without renditions needs each image's header facts and an identity: the
    object's ETag (a version identity, no bytes needed) and a ranged read of its header. The
    rows equal the local ones but for the hash; the bytes fetched are a fraction of the
    images'; queries give the local answers, and a later overwrite is seen through the ETag."""
    files = real_jpegs(40)
    upload(s3, "ranged", files)
    local = copied(files, tmp_path / "local")
    total = sum(f.stat().st_size for f in files)
    no_hash = ROWS.replace(" hash,", "")
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "r.duckdb")) as con:
        con.create_catalog("disk", str(local), renditions=(), progress=False)
        proxy = Proxy(server)
        with proxy.serving() as url:
            monkeypatch.setenv("AWS_ENDPOINT_URL", url)
            s = con.create_catalog("bucket", "s3://ranged/photos/", renditions=(), progress=False)
        assert s.images == len(files) and s.skipped == 0
        assert proxy.sent < 0.25 * total, (proxy.sent, total)  # headers, not photographs
        assert (
            con.duckdb.execute(no_hash, ["disk"]).fetchall()
            == con.duckdb.execute(no_hash, ["bucket"]).fetchall()
        )
        assert (
            con.sql(CLASSIFY.format("disk")).to_pylist()
            == con.sql(CLASSIFY.format("bucket")).to_pylist()
        )
        s3.put_object(Bucket="ranged", Key=f"photos/{files[0].name}", Body=files[1].read_bytes())
        got = {r["file"]: r["label"] for r in con.sql(CLASSIFY.format("bucket")).to_pylist()}
        want = {r["file"]: r["label"] for r in con.sql(CLASSIFY.format("disk")).to_pylist()}
        assert got[files[0].name] == want[files[1].name]  # the new content, not the cache


def test_ranged_reads_fetch_only_the_bytes_asked_for(s3):
    files = real_jpegs(1)
    upload(s3, "rangedread", files)
    from smolql.sources import head, source_for

    uri = f"s3://rangedread/photos/{files[0].name}"
    first = source_for(uri).read_range(uri, 0, 64)
    assert first == files[0].read_bytes()[:64] and first[:2] == b"\xff\xd8"
    got = head(uri, 1000)
    assert got.data == files[0].read_bytes()[:1000] and got.version and not got.complete


def test_a_server_that_fails_10_percent_of_requests_still_gives_complete_results(
    server, s3, tmp_path, monkeypatch
):
    files = real_jpegs(30)
    upload(s3, "flaky", files)
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "f.duckdb"), cache="off") as con:
        con.create_catalog("good", "s3://flaky/photos/", renditions=("96:jpeg:80",), progress=False)
        expected = con.sql(CLASSIFY.format("good")).to_pylist()
        proxy = Proxy(server, fail_share=0.10, seed=7)
        with proxy.serving() as url:
            monkeypatch.setenv("AWS_ENDPOINT_URL", url)
            s = con.create_catalog(
                "flaky", "s3://flaky/photos/", renditions=("96:jpeg:80",), progress=False
            )
            got = con.sql(CLASSIFY.format("flaky")).to_pylist()
        assert proxy.failed > 0.05 * proxy.requests > 0  # the server really failed requests
        assert s.images == len(files) and s.skipped == 0
        assert got == expected
        assert rendered(con, "good") == rendered(con, "flaky")


def test_a_bucket_deleted_mid_query_gives_per_row_errors_not_a_failed_query(
    server, s3, tmp_path, monkeypatch
):
    files = real_jpegs(40)
    upload(s3, "gone", files)
    with smolql.connect(str(tmp_path / "g.duckdb"), cache="off") as con:
        con.create_catalog("c", "s3://gone/photos/", renditions=(), progress=False)
        proxy = Proxy(server)

        def delete_bucket() -> None:
            listed = s3.list_objects_v2(Bucket="gone")["Contents"]
            s3.delete_objects(
                Bucket="gone", Delete={"Objects": [{"Key": o["Key"]} for o in listed]}
            )
            s3.delete_bucket(Bucket="gone")

        proxy.hook, proxy.hook_at = delete_bucket, 10  # after 10 object reads of the query
        with proxy.serving() as url, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monkeypatch.setenv("AWS_ENDPOINT_URL", url)
            rows = con.sql(CLASSIFY.format("c")).to_pylist()
    assert len(rows) == len(files)
    missing = [r for r in rows if r["label"] is None]
    assert 0 < len(missing) < len(files)  # some read before the deletion, the rest NULL
    messages = [str(w.message) for w in caught]
    assert any("s3://gone/photos/" in m for m in messages)


def test_a_manifest_can_list_objects_and_local_files_together(s3, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = real_jpegs(4)
    upload(s3, "mixed", files[:2])
    local = copied(files[2:], tmp_path / "img")
    manifest = tmp_path / "m.parquet"
    paths = [f"s3://mixed/photos/{f.name}" for f in files[:2]] + [
        f"img/{f.name}" for f in files[2:]
    ]
    pq.write_table(pa.table({"uri": paths, "tag": ["a", "b", "c", "d"]}), manifest)
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "x.duckdb")) as con:
        s = con.create_catalog("mixed", str(manifest), renditions=(), progress=False)
        assert s.images == 4
        got = con.sql("SELECT path, tag, classify(image).label AS label FROM mixed ORDER BY tag")
        assert got["path"].to_pylist() == paths[:2] + [str(local / f.name) for f in files[2:]]
        assert all(got["label"].to_pylist())


def test_images_on_a_plain_web_server_listed_in_a_manifest(tmp_path):
    """http:// URIs (a real HTTP server on 127.0.0.1, no ETags): the same catalog and answers
    as local disk, and a same-size overwrite within the same second is still seen."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import pyarrow as pa
    import pyarrow.parquet as pq

    pytest.importorskip("aiohttp", reason="http(s) images need aiohttp (pip install aiohttp)")
    files = real_jpegs(6)
    www = tmp_path / "www"
    www.mkdir()
    for f in files:
        shutil.copy2(f, www / f.name)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        pq.write_table(pa.table({"uri": [base + f.name for f in files]}), tmp_path / "web.parquet")
        warnings.simplefilter("ignore")
        with smolql.connect(str(tmp_path / "w.duckdb")) as con:
            con.create_catalog("web", str(tmp_path / "web.parquet"), renditions=(), progress=False)
            con.create_catalog("disk", str(www), renditions=(), progress=False)
            hashes = "SELECT file, hash FROM {} ORDER BY file"
            assert (
                con.sql(hashes.format("web")).to_pylist()
                == con.sql(hashes.format("disk")).to_pylist()
            )
            before = {r["file"]: r["label"] for r in con.sql(CLASSIFY.format("web")).to_pylist()}
            target = www / files[0].name
            size = target.stat().st_size
            other = (files[1].read_bytes() + b"\0" * size)[:size]
            stamp = target.stat().st_mtime
            target.write_bytes(other)
            os.utime(target, (stamp, stamp))  # same size, same Last-Modified
            after = {r["file"]: r["label"] for r in con.sql(CLASSIFY.format("web")).to_pylist()}
            assert after[files[0].name] == before[files[1].name]
    finally:
        server.shutdown()
        server.server_close()


def test_renditions_can_live_under_an_object_storage_prefix(s3, tmp_path, monkeypatch):
    from smolql.sources import read

    files = real_jpegs(6)
    folder = tmp_path / "img"
    folder.mkdir()
    for f in files:
        shutil.copy2(f, folder / f.name)
    s3.create_bucket(Bucket="rend")
    spec = ("96:jpeg:80",)
    with smolql.connect(str(tmp_path / "plain.duckdb")) as con:  # renditions on local disk
        con.create_catalog("c", str(folder), renditions=spec, progress=False)
        local = {r[0]: Path(r[-1]).read_bytes() for r in con.duckdb.execute(RENDITIONS, ["c"])
                 .fetchall()}  # fmt: skip
    monkeypatch.setenv("SMOLQL_RENDITIONS", "s3://rend/shared/")
    with smolql.connect(str(tmp_path / "r.duckdb")) as con:
        con.create_catalog("c", str(folder), renditions=spec, progress=False)
        rows = con.duckdb.execute(RENDITIONS, ["c"]).fetchall()
        prefix = "s3://rend/shared/r.duckdb.renditions/c/"
        assert len(rows) == len(files) and all(r[-1].startswith(prefix) for r in rows)
        assert {r[0]: read(r[-1])[0] for r in rows} == local  # the same bytes, read back
        keys = lambda: {o["Key"] for o in s3.list_objects_v2(Bucket="rend").get("Contents", [])}  # noqa: E731
        assert keys() == {r[-1].removeprefix("s3://rend/") for r in rows}
        s3.delete_object(Bucket="rend", Key=rows[0][-1].removeprefix("s3://rend/"))
        again = con.refresh_catalog("c", progress=False)
        assert again.processed == 1 and len(keys()) == len(files)  # the missing one rewritten
        con.drop_catalog("c")
        assert keys() == set()
