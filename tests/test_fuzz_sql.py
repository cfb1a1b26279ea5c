"""No crash on any SQL: every statement answers or fails with a SmolQL PEP 249 error that has
a message. Regressions for what the fuzzer (``tests/sqlfuzz.py``) found, and the fuzzer itself
run in a subprocess (a segfault or abort is a non-zero exit there, not a dead test run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import copied, real_jpegs

import smolql

FUZZ = Path(__file__).with_name("sqlfuzz.py")
# The slow tier's count; `python tests/sqlfuzz.py DB SEED 10000 LOG` runs the full 10,000.
STATEMENTS = int(os.environ.get("SMOLQL_FUZZ_STATEMENTS", "2000"))


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("fuzz")
    folder = copied(real_jpegs(4), root / "img")
    path = str(root / "f.duckdb")
    warnings.simplefilter("ignore")
    with smolql.connect(path) as con:
        con.create_catalog("photos", str(folder), renditions=(), progress=False)
        con.sql("SELECT classify(image).label, classify_topk(image, 5) FROM photos")
    return path


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        # int() of a LIMIT literal (early-LIMIT planning): ValueError
        ("SELECT classify_topk(image, 3) AS t FROM photos LIMIT 'x'", "Could not convert"),
        ("SELECT classify(image).label FROM photos LIMIT 1e308", "out of range"),
        # a classification as another's image: AttributeError while planning stages
        (
            "SELECT classify(classify(classify(image))).label, max(width) FROM photos"
            " GROUP BY 1 HAVING count(*) >= 1",
            "not the result of classify()",
        ),
        # * as an argument: KeyError on the pre-filter's missing image column
        ("SELECT classify(*).label FROM photos", "not *"),
        ("SELECT classify(crop(image, *, 10, 100, 100)).label FROM photos", "crop() takes"),
        # sqlglot tripping over malformed input: AttributeError from inside the parser
        ("SELECT CLASSIFY { : 1 } ) FROM photos WHERE CLASSIFY(image).label LIKE '%a%'", "syntax"),
    ],
)
def test_what_the_fuzzer_found_is_a_clear_error(db, sql, says):
    with smolql.connect(db) as con, pytest.raises(smolql.Error, match=re.escape(says)):
        con.sql(sql)


def test_a_limit_that_is_not_an_integer_constant_still_answers_where_duckdb_does(db):
    with smolql.connect(db) as con:
        assert con.sql("SELECT classify(image).label FROM photos LIMIT 2").num_rows == 2
        assert con.sql("SELECT classify(image).label FROM photos LIMIT 2.5").num_rows == 3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_statements_give_pep249_errors_or_answers(db, tmp_path, seed):
    log = tmp_path / "findings.jsonl"
    proc = subprocess.run(
        [sys.executable, str(FUZZ), db, str(seed), str(STATEMENTS // 2), str(log)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    last = Path(f"{log}.last").read_text() if Path(f"{log}.last").exists() else ""
    assert proc.returncode == 0, f"the process died (exit {proc.returncode}) at: {last}"
    findings = [json.loads(line) for line in log.read_text().splitlines()]
    assert findings == [], findings[:5]
    assert f"{STATEMENTS // 2} statements" in proc.stdout


NULL_WITH_WARNING = "NULL, with a warning naming the file"


@pytest.mark.parametrize(
    ("call", "decided"),
    [
        ("classify(crop(image, -10, -10, 50, 50))", NULL_WITH_WARNING),
        ("classify(crop(image, 10, 10, 0, 50))", NULL_WITH_WARNING),
        ("classify(crop(image, 5000, 5000, 50, 50))", NULL_WITH_WARNING),
        ("classify(crop(image, NULL, 10, 50, 50))", "NULL"),
        ("classify(CASE WHEN id > 100 THEN image END)", "NULL"),
        (
            "classify(struct_pack(catalog := 'photos', id := 1, path := '/nope.jpg', hash := 'x'))",
            NULL_WITH_WARNING,
        ),
        ("classify_topk(image, 0)", "k must be between 1 and 1000, not 0"),
        ("classify_topk(image, -1)", "k must be between 1 and 1000, not -1"),
        ("classify_topk(image, NULL)", "k must be a positive integer constant"),
        ("classify(NULL)", "takes an image"),
        ("classify(struct_pack(a := 1))", "takes an image"),
        ("classify('x')", "takes an image"),
        ("classify(image, 'nope')", "unknown model 'nope'"),
    ],
)
@pytest.mark.parametrize("limit", ["", " LIMIT 1"])
def test_bad_udf_arguments_are_decided(db, call, decided, limit):
    """What each bad argument gives, as the README's table says: a crop box that is invalid
    or outside the image, or an image value whose file is gone, is a NULL with a warning; a
    NULL argument is a NULL; a k out of range, a non-image and an unknown model are errors."""
    sql = f"SELECT {call} AS v FROM photos{limit}"
    with smolql.connect(db) as con, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if decided.startswith("NULL"):
            rows = con.sql(sql).to_pylist()
            assert all(r["v"] is None for r in rows)
            assert bool(caught) == (decided == NULL_WITH_WARNING) or not rows
        else:
            with pytest.raises(smolql.Error, match=re.escape(decided)):
                con.sql(sql)
