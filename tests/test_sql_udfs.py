"""The SQL surface around the UDFs: settings, cache, errors, EXPLAIN, LIMIT early stop."""

from __future__ import annotations

import warnings

import pytest

from smolql.errors import ConfigError, DecodeError, ParseError, QueryError
from smolql.execute import ImageWarning


@pytest.fixture
def photos(con, small_dir):
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    con.sql("SET smolql.backend = 'onnxruntime'")
    return con


def inferred(con, sql: str) -> int:
    plan = con.sql("EXPLAIN ANALYZE " + sql)["plan"].to_pylist()
    return sum(int(line.split("inferred ")[1].split(",")[0]) for line in plan if "inferred" in line)


def test_set_and_reset_settings(photos):
    assert photos.sql("SET smolql.batch_size = 8").to_pylist() == [
        {"setting": "batch_size", "value": "8"}
    ]
    assert photos.settings.batch_size == 8
    photos.sql("RESET smolql.batch_size")
    assert photos.settings.batch_size == 0
    with pytest.raises(ConfigError, match="did you mean 'on_error'"):
        photos.sql("SET smolql.on_eror = 'fail'")
    with pytest.raises(ConfigError, match="must be one of null, fail"):
        photos.sql("SET smolql.on_error = 'explode'")


def test_cache_reuses_results_and_can_be_bypassed(photos):
    sql = "SELECT id, classify(image).label FROM photos ORDER BY id"
    assert inferred(photos, sql) == 12
    assert inferred(photos, sql) == 0  # all from the cache
    assert inferred(photos, "SELECT id FROM photos WHERE classify(image).score > 0.1") == 0
    photos.sql("SET smolql.cache = off")
    assert inferred(photos, sql) == 12
    photos.sql("SET smolql.cache = on")


def test_changed_content_invalidates_the_cache(photos, small_dir):
    sql = "SELECT id, classify(image).label FROM photos ORDER BY id"
    photos.sql(sql)
    victim = sorted(small_dir.iterdir())[0]
    victim.write_bytes(sorted(small_dir.iterdir())[5].read_bytes())
    photos.refresh_catalog("photos", progress=False)
    assert inferred(photos, sql) == 0  # same content as image 6: its cached result is reused
    other = sorted(small_dir.iterdir())[1]
    data = other.read_bytes()
    other.write_bytes(data + b"\x00")  # new content (a byte after the end), same picture
    photos.refresh_catalog("photos", progress=False)
    assert inferred(photos, sql) == 1


def test_metadata_prefilter_limits_inference(photos):
    n = photos.duckdb.execute("SELECT count(*) FROM photos WHERE width > 450").fetchall()[0][0]
    photos.sql("SET smolql.cache = off")
    assert 0 < n < 12
    assert (
        inferred(photos, "SELECT id FROM photos WHERE width > 450 AND classify(image).score > 0")
        == n
    )


@pytest.mark.slow
def test_limit_stops_inference_early(imagenet):
    con, _ = imagenet
    con.sql("SET smolql.backend = 'onnxruntime'")
    con.sql("SET smolql.cache = off")
    try:
        result = con.sql("SELECT id FROM imagenet WHERE classify(image).score > 0.2 LIMIT 3")
        assert result.num_rows == 3
        assert (
            inferred(con, "SELECT id FROM imagenet WHERE classify(image).score > 0.2 LIMIT 3") <= 64
        )
    finally:
        con.sql("RESET smolql.cache")
        con.sql("RESET smolql.backend")


def test_undecodable_image_gives_null_and_a_warning_or_fails(photos, small_dir):
    victim = sorted(small_dir.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:4000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = photos.sql(
            "SELECT file, classify(image).label AS l FROM photos ORDER BY id"
        ).to_pylist()
    assert [r["l"] is None for r in rows].count(True) == 1
    assert any(
        issubclass(w.category, ImageWarning) and victim.name in str(w.message) for w in caught
    )
    photos.sql("SET smolql.on_error = 'fail'")
    with pytest.raises(DecodeError) as err:
        photos.sql("SELECT classify(image).label FROM photos")
    assert err.value.file == str(victim)


def test_udf_on_a_non_image_column_is_an_error(photos):
    with pytest.raises(QueryError, match="takes an image"):
        photos.sql("SELECT classify(path) FROM photos")


def test_syntax_errors_have_line_and_column(photos):
    with pytest.raises(ParseError) as err:
        photos.sql("SELECT classify(image).label\nFROM photos WHERE WHERE")
    assert err.value.line == 2 and err.value.column is not None


def test_plain_sql_is_untouched(photos):
    assert photos.sql("SELECT 1 + 1 AS two").to_pylist() == [{"two": 2}]
    assert photos.sql("CREATE TABLE t AS SELECT 42 AS x; SELECT x FROM t").to_pylist() == [
        {"x": 42}
    ]


def test_explain_shows_prefilter_plan_cache_and_costs(photos):
    plan = "\n".join(
        photos.sql(
            "EXPLAIN SELECT id FROM photos WHERE width > 300 AND classify(image).label = 'tench'"
        )["plan"].to_pylist()
    )
    for part in (
        "pre-filter (DuckDB): SELECT DISTINCT image AS __img FROM photos WHERE width > 300",
        "rows:",
        "plan: efficientnet_lite0 on original, onnxruntime/fp32, batch=",
        "cache:",
        "est. cost: ",
        "img/s pipelined; per image decode",
        "inference",
        "cost basis: ",
        "ROI pushdown",
        "Final query (DuckDB)",
    ):
        assert part in plan


def test_parameters_are_bound_as_data(photos):
    rows = photos.sql(
        "SELECT count(*) AS n FROM photos WHERE classify(image).label = ?", ["x' OR 1=1 --"]
    ).to_pylist()
    assert rows == [{"n": 0}]


def test_results_stream_as_record_batches(photos):
    sql = "SELECT id, classify(image).label AS l FROM photos ORDER BY id"
    table = photos.sql(sql)
    reader = photos.stream(sql, batch_size=5)
    batches = list(reader)
    assert len(batches) >= 2 and all(b.num_rows <= 5 for b in batches)
    assert sum(b.num_rows for b in batches) == 12
    assert [r for b in batches for r in b.to_pylist()] == table.to_pylist()
    plain = list(photos.stream("SELECT * FROM range(10)", batch_size=4))
    assert sum(b.num_rows for b in plain) == 10


@pytest.mark.parametrize(
    "hostile", ["x'; DROP TABLE photos; --", "' OR '1'='1", "/* c */ tench", "a\\'b", "$p1"]
)
def test_hostile_parameters_are_data_in_udf_queries(photos, hostile):
    rows = photos.sql(
        "SELECT count(*) AS n FROM photos WHERE file <> ? AND classify(image).label = ?",
        [hostile, hostile],
    ).to_pylist()
    assert rows == [{"n": 0}]
    assert photos.sql("SELECT count(*) AS n FROM photos").to_pylist() == [{"n": 12}]


def test_named_parameters_bind_in_prefilters_and_the_final_query(photos):
    sql = "SELECT id FROM photos WHERE id <= :top AND classify(image).score > :min ORDER BY id"
    rows = photos.sql(sql, {"top": 3, "min": 0.0}).to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3]
    plan = "\n".join(photos.sql("EXPLAIN " + sql, {"top": 3, "min": 0.0})["plan"].to_pylist())
    assert "$top" in plan and "3" not in plan.split("pre-filter (DuckDB):")[1].split("\n")[0]
