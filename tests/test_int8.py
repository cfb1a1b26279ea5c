"""int8 asked for directly: the first query calibrates the engine on the catalog's own images
(at most 300), later queries reuse it; both engines (ONNX Runtime, OpenVINO through NNCF)."""

from __future__ import annotations

import warnings

import pytest
from conftest import copied, real_jpegs

import smolql
from smolql.backends.registry import backends
from smolql.executor.calibrate import CalibrationNotice
from smolql.models.registry import get_model
from smolql.ops.loader import preprocessed
from smolql.ops.pipeline import ImageRef, Preprocessor

pytestmark = pytest.mark.slow
SQL = "SELECT file, classify(image).label AS l FROM photos ORDER BY file"


def labels(con) -> list[str | None]:
    return con.sql(SQL)["l"].to_pylist()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_query_at_int8_calibrates_once_on_the_catalog(backend, tmp_path, monkeypatch):
    if "int8" not in backends()[backend].capabilities().precisions:
        pytest.skip(f"{backend} offers no int8 here (openvino's needs nncf)")
    monkeypatch.setenv("SMOLQL_CACHE", str(tmp_path / "cache"))  # no engine made before
    folder = copied(real_jpegs(24), tmp_path / "photos")
    with smolql.connect(str(tmp_path / "db.duckdb"), cache="off") as con:
        con.create_catalog("photos", str(folder), renditions=(), progress=False)
        reference = labels(con)
        con.sql("SET smolql.precision = 'int8'")
        con.sql(f"SET smolql.backend = '{backend}'")
        pending = (
            f"engine not made yet: the first run calibrates {backend}/int8 on at most 300"
            " images of catalog 'photos', once"
        )
        assert pending in [x.strip() for x in con.sql(f"EXPLAIN {SQL}")["plan"].to_pylist()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = labels(con)
            again = labels(con)
        notes = [str(w.message) for w in caught if w.category is CalibrationNotice]
        assert notes == [
            f"calibrating {backend}/int8 for efficientnet_lite0 on 24 images of catalog"
            " 'photos' (once; the engine is kept for later queries)"
        ]
        assert first == again and None not in first
        agree = sum(a == b for a, b in zip(first, reference, strict=True)) / len(first)
        assert agree >= 0.75, agree  # measured on 500 images: about 97% (benchmarks/int8.py)
        plan = "\n".join(con.sql(f"EXPLAIN {SQL}")["plan"].to_pylist())
        assert f"{backend}/int8" in plan and "engine not made yet" not in plan
    with smolql.connect(str(tmp_path / "db.duckdb"), precision="int8", backend=backend) as con:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert labels(con) == first  # the kept engine (and, here, the cache)
        assert not [w for w in caught if w.category is CalibrationNotice]


def test_int8_without_a_catalog_says_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLQL_CACHE", str(tmp_path / "cache"))
    photo = real_jpegs(1)[0]
    with smolql.connect(str(tmp_path / "db.duckdb"), precision="int8") as con:
        value = f"{{'catalog': 'x', 'id': 1, 'path': '{photo}', 'hash': 'h'}}"
        with pytest.raises(smolql.Error, match="needs calibration images from a catalog"):
            con.sql(f"SELECT classify({value}).label")


def test_openvino_int8_runs_every_convolution_in_int8(tmp_path, monkeypatch):
    """NNCF quantises the graph as OpenVINO's converter folds it: read unfolded, the 16
    depthwise convolutions of EfficientNet-Lite0 stayed in fp32 (33 of 49 in u8)."""
    backend = backends()["openvino"]
    if "int8" not in backend.capabilities().precisions:
        pytest.skip("openvino offers no int8 here (it needs nncf)")
    monkeypatch.setenv("SMOLQL_CACHE", str(tmp_path / "cache"))
    spec = get_model("efficientnet_lite0")
    refs = [ImageRef(i, str(f), None) for i, f in enumerate(real_jpegs(16))]
    images = preprocessed(refs, Preprocessor(spec.transform))
    backend.calibrate(spec, "int8", images)
    session = backend.open(spec, "int8", 2, 16)
    convolutions = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in session.compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    ]
    assert len(convolutions) == 49 and set(convolutions) == {"u8"}, convolutions
    assert session.run(images).argmax(1).shape == (16,)
