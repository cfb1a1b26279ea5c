"""Golden planner fixtures (SQL in -> stages and final query out) and UDF call checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot

from smolql.errors import QueryError
from smolql.sql.logical import plan_query

FIXTURES = Path(__file__).parent / "fixtures" / "planner"
COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 2.0, "efficientnet_lite2": 3.0}


def load_cases(path: Path) -> list[dict]:
    """Blocks separated by blank lines: comments, one statement, then ``-- stage``/``-- final``/
    ``-- early limit`` expectations."""
    cases = []
    for block in path.read_text().split("\n\n"):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        sql = " ".join(ln for ln in lines if ln and not ln.startswith("--")).rstrip(";")
        if not sql:
            continue
        expect = {
            "title": next(
                (ln[3:] for ln in lines if ln.startswith("-- ") and ":" not in ln[:20]), sql
            ),
            "sql": sql,
            "stages": [],
            "final": None,
            "early": None,
        }
        for ln in lines:
            if ln.startswith("-- stage "):
                head, _, driver = ln[len("-- stage ") :].partition(": ")
                index, model = head.split()
                expect["stages"].append((int(index), model, driver))
            elif ln.startswith("-- final: "):
                expect["final"] = ln[len("-- final: ") :]
            elif ln.startswith("-- early limit: "):
                expect["early"] = int(ln[len("-- early limit: ") :])
        cases.append(expect)
    return cases


CASES = load_cases(FIXTURES / "stages.sql")


@pytest.mark.parametrize("case", CASES, ids=[c["title"][:60] for c in CASES])
def test_golden_plan(case):
    tree = sqlglot.parse_one(case["sql"], read="duckdb")
    plan = plan_query(tree, "efficientnet_lite0", COST.__getitem__)
    got = [(s.index, s.call.model, s.driver.sql("duckdb")) for s in plan.stages]
    assert got == case["stages"]
    assert plan.final_sql() == case["final"]
    assert plan.early_limit == case["early"]


def test_there_are_golden_cases_for_every_rewrite():
    titles = " ".join(c["title"] for c in CASES)
    for rule in (
        "pre-filter",
        "cheap model",
        "predicates before projections",
        "crop()",
        "CTE",
        "LIMIT without ORDER BY",
        "OR",
        "classify_topk",
        "nested crop()",
    ):
        assert rule in titles


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT classify() FROM photos", "takes 1 to 2 arguments"),
        (
            "SELECT classify(image, 'efficientnet_lite9') FROM photos",
            "did you mean 'efficientnet_lite",
        ),
        ("SELECT classify(image, 3) FROM photos", "model must be a string constant"),
        ("SELECT classify_topk(image, 'x') FROM photos", "k must be a positive integer"),
        ("SELECT classify(crop(image, 1, 2)) FROM photos", "crop() takes 5 arguments"),
        ("SELECT crop(image, 0, 0, 5, 5) FROM photos", "image expression"),
    ],
)
def test_bad_udf_calls_are_clear_errors(sql, message):
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_query(sqlglot.parse_one(sql, read="duckdb"), "efficientnet_lite0", COST.__getitem__)
