"""EXPLAIN is the plan that runs (issue 14, point 1): for a dozen queries under different
settings, each stage's plan as EXPLAIN prints it equals the plan the executor ran, as EXPLAIN
ANALYZE reports it and as it was handed to inference."""

from __future__ import annotations

import pytest

from smolql.executor.local import LocalExecutor

QUERIES = [
    ({}, "SELECT classify(image).label FROM photos"),
    ({"backend": "onnxruntime"}, "SELECT classify(image).label FROM photos WHERE width > 300"),
    ({"backend": "openvino"}, "SELECT id FROM photos WHERE classify(image).score > 0.2"),
    ({"precision": "fp32"}, "SELECT classify_topk(image, 3) FROM photos"),
    ({"batch_size": "8"}, "SELECT classify(image).label FROM photos ORDER BY id"),
    ({"model": "efficientnet_lite1"}, "SELECT classify(image).label FROM photos"),
    ({}, "SELECT classify(image, 'efficientnet_lite2').label FROM photos WHERE id < 4"),
    (
        {"backend": "onnxruntime", "batch_size": "4"},
        "SELECT classify(crop(image, 10.5, 20, 100, 90)).label FROM photos",
    ),
    (
        {},
        "SELECT classify(image, 'efficientnet_lite1').label FROM photos"
        " WHERE classify(image).score > 0.1",
    ),
    ({"backend": "torch"}, "SELECT classify(image).label FROM photos LIMIT 3"),
    ({"workers": "1"}, "SELECT count(*) FROM photos GROUP BY classify(image).label"),
    (
        {"backend": "openvino", "precision": "fp32", "batch_size": "16"},
        "WITH w AS (SELECT * FROM photos WHERE height > 200)"
        " SELECT classify(image).class_index FROM w",
    ),
]


def stage_plans(lines: list[str]) -> dict[str, list[str]]:
    """Stage header -> its ``plan:`` and ``engine:`` lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith("Stage "):
            current = line.split(":")[0]
            out[current] = []
        elif current and line.strip().startswith(("plan:", "engine:", "stage path:")):
            out[current].append(line.strip())
    return out


@pytest.fixture
def photos(con, small_dir):
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    return con


@pytest.mark.parametrize(("settings", "sql"), QUERIES, ids=[q[1][:50] for q in QUERIES])
def test_explain_equals_the_executed_plan(photos, monkeypatch, settings, sql):
    handed: list[str] = []
    real = LocalExecutor.run

    def recording(self, plan, refs, **kw):
        handed.append(f"plan: {plan.physical.describe()}, batch={plan.batch_size}")
        return real(self, plan, refs, **kw)

    monkeypatch.setattr(LocalExecutor, "run", recording)
    photos.sql("SET smolql.cache = off")
    for name, value in settings.items():
        photos.sql(f"SET smolql.{name} = '{value}'")
    explained = stage_plans(photos.sql("EXPLAIN " + sql)["plan"].to_pylist())
    executed = stage_plans(photos.sql("EXPLAIN ANALYZE " + sql)["plan"].to_pylist())
    assert explained and explained == executed
    assert all(len(lines) == 3 for lines in explained.values())
    # What inference was actually given, stage by stage, in run order.
    expected = [lines[0].split(" (")[0] for lines in explained.values()]
    assert sorted(set(handed)) == sorted(set(expected))
