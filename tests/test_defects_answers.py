"""Issue 13, wrong answers and UDF placement: the cache answers only for the content that is at
an image's path now; crop boxes follow one stated rule; UDFs where SmolQL cannot evaluate them
are positioned errors; nested crops compose."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

import smolql
from smolql.errors import DataError, DecodeError, ProgrammingError, QueryError
from smolql.execute import ImageWarning

LABELS = "SELECT file, classify(image).label AS label FROM {c} ORDER BY file"


@pytest.fixture
def photos(con, small_dir):
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    con.sql("SET smolql.backend = 'onnxruntime'")
    return con


def labels(con, catalog: str = "photos", cache: bool = True) -> list[dict]:
    con.sql(f"SET smolql.cache = {'on' if cache else 'off'}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        return con.sql(LABELS.format(c=catalog)).to_pylist()


def same_size_same_mtime_edit(path) -> None:
    """Overwrite a JPEG's scan bytes in place: same size, same mtime, new content."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_cache_never_answers_for_replaced_truncated_or_deleted_files(photos, small_dir):
    # Fails before the fix: the cache returned the OLD labels for all of them.
    files = sorted(small_dir.iterdir())
    labels(photos)  # fills the cache
    shutil.copyfile(files[7], files[0])  # another photo
    files[1].write_bytes(files[1].read_bytes()[:3000])  # truncated
    files[2].unlink()  # deleted
    same_size_same_mtime_edit(files[3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached = photos.sql(LABELS.format(c="photos")).to_pylist()
    assert cached == labels(photos, cache=False)
    by_file = {r["file"]: r["label"] for r in cached}
    assert by_file[files[0].name] == by_file[files[7].name]
    assert by_file[files[1].name] is None and by_file[files[2].name] is None
    warned = " ".join(str(w.message) for w in caught if issubclass(w.category, ImageWarning))
    assert files[1].name in warned and files[2].name in warned
    photos.sql("SET smolql.on_error = 'fail'")
    with pytest.raises(DecodeError):
        photos.sql(LABELS.format(c="photos"))


def test_refresh_sees_a_same_size_same_mtime_replacement(photos, small_dir):
    # Fails before the fix: refresh compared size and mtime only.
    victim = sorted(small_dir.iterdir())[4]
    before = photos.sql(f"SELECT hash FROM photos WHERE file = '{victim.name}'").to_pylist()
    same_size_same_mtime_edit(victim)
    summary = photos.refresh_catalog("photos", progress=False)
    after = photos.sql(f"SELECT hash FROM photos WHERE file = '{victim.name}'").to_pylist()
    assert summary.processed == 1 and summary.unchanged == len(list(small_dir.iterdir())) - 1
    assert before != after


def test_a_stale_catalog_does_not_poison_another(con, small_dir, tmp_path):
    # Fails before the fix: the stale catalog's result was cached under the other's hash.
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(small_dir, a)
    shutil.copytree(small_dir, b)
    for name, folder in (("a", a), ("b", b)):
        con.create_catalog(name, str(folder), renditions=(), progress=False)
    con.sql("SET smolql.backend = 'onnxruntime'")
    files = sorted(a.iterdir())
    shutil.copyfile(files[9], files[1])  # catalog a is stale for this file
    expected_b = labels(con, "b", cache=False)
    assert labels(con, "a") == labels(con, "a", cache=False)
    assert labels(con, "b") == expected_b
    con.refresh_catalog("a", progress=False)
    assert labels(con, "b") == expected_b


def test_a_forged_image_value_cannot_write_under_another_images_hash(photos, small_dir):
    files = sorted(small_dir.iterdir())
    target = photos.sql("SELECT id, hash FROM photos ORDER BY file LIMIT 1").to_pylist()[0]
    forged = (
        f"SELECT classify({{'catalog': 'photos', 'id': {target['id']},"
        f" 'path': '{files[8]}', 'hash': '{target['hash']}'}}).label AS label"
    )
    photos.sql("SET smolql.cache = off")
    truth = photos.sql(
        f"SELECT classify(image).label AS label FROM photos WHERE file = '{files[8].name}'"
    ).to_pylist()
    photos.sql("SET smolql.cache = on")
    assert photos.sql(forged).to_pylist() == truth  # the pixels at that path, not the claim
    assert labels(photos) == labels(photos, cache=False)  # and nothing was written under it


def test_fractional_crop_boxes_round_outward(photos):
    # Fails before the fix: fractional boxes gave NULL without a warning.
    one = photos.sql(
        "SELECT classify(crop(image, 1.5, 2.5, 100.7, 100.2)).label AS a,"
        " classify(crop(image, 1, 2, 102, 101)).label AS b FROM photos ORDER BY id"
    ).to_pylist()
    assert all(r["a"] is not None and r["a"] == r["b"] for r in one)
    photos.sql("CREATE TABLE boxes AS SELECT 1 AS id, 10.25::DOUBLE AS x, 20.75::DOUBLE AS y")
    rows = photos.sql(
        "SELECT classify(crop(p.image, b.x, b.y, 150.5, 140.1)).score AS s FROM photos p"
        " JOIN boxes b USING (id)"
    ).to_pylist()
    assert rows[0]["s"] is not None


@pytest.mark.parametrize(
    "box", ["-1, 0, 50, 50", "0, 0, 0, 50", "0, 0, 50, -5", "100000, 0, 50, 50"]
)
def test_invalid_boxes_give_null_with_a_warning_or_fail(photos, box):
    # Fails before the fix for negative and zero-size boxes: NULL without a warning.
    sql = f"SELECT classify(crop(image, {box})).label AS l FROM photos WHERE id = 1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert photos.sql(sql).to_pylist() == [{"l": None}]
    assert [w for w in caught if issubclass(w.category, ImageWarning)]
    photos.sql("SET smolql.on_error = 'fail'")
    with pytest.raises(DataError):
        photos.sql(sql)


def test_a_null_box_gives_null_silently(photos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = photos.sql(
            "SELECT classify(crop(image, NULL, 0, 50, 50)).label AS l FROM photos WHERE id = 1"
        ).to_pylist()
    assert rows == [{"l": None}]


@pytest.mark.parametrize("arg", ["'a'", "'94'"])
def test_string_crop_arguments_name_the_argument(photos, arg):
    with pytest.raises(QueryError, match="argument x must be a number"):
        photos.sql(f"SELECT classify(crop(image, {arg}, 0, 10, 10)) FROM photos")


def test_string_crop_columns_name_the_argument(photos):
    photos.sql("CREATE TABLE sboxes AS SELECT 1 AS id, '5' AS w")
    with pytest.raises(QueryError, match="argument width must be a number"):
        photos.sql(
            "SELECT classify(crop(p.image, 0, 0, b.w, 10)) FROM photos p JOIN sboxes b USING (id)"
        )


def test_nested_crops_compose_into_one_region(photos):
    rows = photos.sql(
        "SELECT classify(crop(crop(image, 10, 20, 200, 180), 5, 7, 120, 110)).label AS a,"
        " classify(crop(image, 15, 27, 120, 110)).label AS b FROM photos ORDER BY id"
    ).to_pylist()
    assert all(r["a"] is not None and r["a"] == r["b"] for r in rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = photos.sql(
            "SELECT classify(crop(crop(image, 0, 0, 50, 50), 40, 0, 20, 20)).label AS l"
            " FROM photos WHERE id = 1"
        ).to_pylist()
    assert out == [{"l": None}]
    assert any("outside the enclosing crop" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        (
            "SELECT p.file FROM photos p JOIN photos q ON classify(p.image).label = q.file",
            "JOIN ... ON",
        ),
        (
            "SELECT (SELECT classify(p.image).label) FROM photos p",
            "correlated subquery",
        ),
        (
            "SELECT x.l FROM photos p, LATERAL (SELECT classify(p.image).label AS l) x",
            "correlated subquery or LATERAL",
        ),
        (
            "SELECT list_transform([image], x -> classify(x).label) FROM photos",
            "inside a lambda",
        ),
    ],
)
def test_udfs_where_they_cannot_run_are_positioned_errors(photos, sql, match):
    with pytest.raises(QueryError, match=match) as err:
        photos.sql(sql)
    assert err.value.line == 1 and err.value.column


def test_binder_errors_with_limit_are_pep249_errors(photos):
    # Fails before the fix: a raw duckdb.BinderException escaped.
    for sql in (
        "SELECT file, classify(image).label FROM photos WHERE widht > 1 LIMIT 5",
        "SELECT (classify_topk(image, 3)) c LIMIT 2",
    ):
        with pytest.raises(ProgrammingError) as err:
            photos.sql(sql)
        assert isinstance(err.value, smolql.SmolQLError)
        assert "\n" not in err.value.message
