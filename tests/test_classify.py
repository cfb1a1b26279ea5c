"""Classifying catalogs end to end: accuracy on the sample, bad images as NULLs, the machine's
calibration measured once (never in a query) and shared by every database."""

from __future__ import annotations

import warnings

import pyarrow.compute as pc
import pytest

import smolql
from smolql.executor.local import softmax_topk


def top1(con, table, catalog="imagenet") -> float:
    labels = dict(con.duckdb.execute(f"SELECT id, class_index FROM {catalog}").fetchall())
    ids, predicted = table["id"].to_pylist(), table["class_index"].to_pylist()
    return sum(labels[i] == p for i, p in zip(ids, predicted, strict=True)) / len(ids)


@pytest.mark.slow
def test_lite0_accuracy_on_the_sample_originals_and_renditions(imagenet):
    con, _ = imagenet
    result = con.classify("imagenet", backend="onnxruntime", progress=False)
    assert result.num_rows == 500 and result["error"].null_count == 500
    assert result.column_names == ["id", "label", "score", "class_index", "model", "error"]
    accuracy = top1(con, result)
    assert accuracy >= 0.85, f"EfficientNet-Lite0 top-1 on originals: {accuracy:.3f}"
    scores = result["score"].to_pylist()
    assert all(0 < s <= 1 for s in scores)
    q75 = con.classify("imagenet", backend="onnxruntime", rendition="161:jpeg:75", progress=False)
    small = top1(con, q75)
    assert 0.6 < small < accuracy, f"top-1 on 161 px q75 renditions {small:.3f}"


@pytest.mark.slow
def test_where_filter_limits_the_images(imagenet):
    con, _ = imagenet
    result = con.classify("imagenet", backend="openvino", where="class_index < 40", progress=False)
    assert result.num_rows == 20
    assert set(result["id"].to_pylist()) == {
        i
        for (i,) in con.duckdb.execute("SELECT id FROM imagenet WHERE class_index < 40").fetchall()
    }


def test_undecodable_image_yields_null_with_reason(con, small_dir):
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    victim = sorted(small_dir.iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # damaged after ingest
    result = con.classify("photos", backend="onnxruntime", progress=False)
    assert result.num_rows == 12
    bad = result.filter(pc.invert(pc.is_null(result["error"]))).to_pylist()
    assert len(bad) == 1 and bad[0]["label"] is None and bad[0]["score"] is None
    assert str(victim) in bad[0]["error"] and "Premature end" in bad[0]["error"]


@pytest.fixture
def calibration_folder(tmp_path, monkeypatch):
    """An empty per-user calibration cache for this test (the ONNX exports stay shared)."""
    from smolql.planner import calibration

    folder = tmp_path / "calibration"
    monkeypatch.setattr(calibration, "folder", lambda: folder)
    return folder


def explain_engine(con, sql: str) -> str:
    plan = con.sql("EXPLAIN " + sql)["plan"].to_pylist()
    return next(line for line in plan if line.strip().startswith("engine:"))


def test_a_query_never_calibrates_and_says_so(con, small_dir, calibration_folder):
    from smolql.planner.physical import NotCalibratedWarning

    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    sql = "SELECT classify(image).label FROM photos"
    assert "default: not calibrated (run `smolql calibrate`)" in explain_engine(con, sql)
    with pytest.warns(NotCalibratedWarning, match="smolql calibrate"):
        con.sql(sql)
    assert not calibration_folder.exists()  # nothing was measured in the query path


@pytest.mark.slow
def test_calibration_is_per_machine_and_shared_by_every_database(
    tmp_path, small_dir, calibration_folder, monkeypatch
):
    from smolql.models.registry import get_model
    from smolql.planner import calibration

    first = smolql.connect(str(tmp_path / "one.duckdb"))
    chosen = first.calibrate(["efficientnet_lite0"], paths=[str(p) for p in small_dir.iterdir()])
    first.close()
    backend, precision, batch, rate = chosen["efficientnet_lite0"]
    stored = calibration.load(get_model("efficientnet_lite0"))
    assert stored is not None and stored.chosen.top1_agreement >= 0.995 and rate > 0
    assert (stored.chosen.backend, stored.chosen.batch_size) == (backend, batch)
    assert {m.backend for m in stored.measurements} >= {"onnxruntime", "openvino", "torch"}
    (written,) = list(calibration_folder.iterdir())
    stamp = written.stat().st_mtime_ns

    with smolql.connect(str(tmp_path / "two.duckdb")) as second:  # a fresh database
        second.create_catalog("photos", str(small_dir), renditions=(), progress=False)
        sql = "SELECT classify(image).label FROM photos"
        assert "measured on this machine" in explain_engine(second, sql)
        plan = second.sql("EXPLAIN " + sql)["plan"].to_pylist()
        assert any(f"{backend}/{precision}" in line for line in plan)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "not calibrated" warning
            second.sql(sql)
    assert written.stat().st_mtime_ns == stamp  # not measured again

    # Another runtime version (or weights, or machine) is another calibration.
    versions = {**calibration.runtime_versions(), "onnxruntime": "0.0.0-other"}
    monkeypatch.setattr(calibration, "runtime_versions", lambda: versions)
    assert calibration.load(get_model("efficientnet_lite0")) is None


def test_softmax_topk_orders_classes():
    import numpy as np

    idx, p = softmax_topk(np.array([[0.0, 2.0, 1.0]], np.float32), 2)
    expected = np.exp([2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    assert idx.tolist() == [[1, 2]]
    np.testing.assert_allclose(p[0], expected, rtol=1e-6)


def test_gpu_status_is_reported_not_faked():
    from smolql.backends.registry import backends

    for name in ("torch_cuda", "tensorrt"):
        reason = backends()[name].unavailable_reason()
        if reason is None:  # a GPU machine: the conformance suite covers it
            continue
        assert "GPU" in reason


def test_taking_turns_hands_a_turn_s_batches_to_the_engine_together():
    """Where decoding and inference take turns, the batches of one turn go to the engine in one
    call (OpenVINO keeps all their parts in flight), and the answers are those of one batch at
    a time; the bad image of the turn is an error row, not a hole in the batches."""
    from conftest import real_jpegs

    from smolql.backends.openvino_cpu import OpenVinoBackend
    from smolql.executor.local import classify_stream
    from smolql.models.registry import get_model
    from smolql.ops.pipeline import ImageRef, Preprocessor
    from smolql.planner.cost import turn_batches

    if OpenVinoBackend().unavailable_reason():
        pytest.skip("openvino is not installed")

    Recorded = recorded_openvino()
    spec = get_model("efficientnet_lite0")
    pre = Preprocessor(spec.transform)
    session = Recorded(spec, "fp32", 2, 16)
    files = [str(p) for p in real_jpegs(40)]
    files[5] = __file__  # not an image
    refs = [ImageRef(i, p, 1) for i, p in enumerate(files)]
    turn = turn_batches(16, 4 * 3 * 224 * 224)
    try:
        runs = {}
        for turns in (True, False):
            session.calls = []
            stream = classify_stream(
                refs, spec, session, pre, batch_size=16, decode_workers=2, turns=turns
            )
            runs[turns] = [(p.key, p.class_index, p.error is None) for p in stream]
            calls = session.calls
            if turns:
                assert turn == 4 and calls == [[15, 16, 8]]  # one turn: 40 images, the 6th bad
            else:
                assert calls == [[15], [16], [8]]
    finally:
        session.close()
    assert runs[True] == runs[False]
    assert sorted(k for k, _, ok in runs[True] if not ok) == [5] and len(runs[True]) == 40


def recorded_openvino() -> type:
    """OpenVINO's real session with the batch sizes of each call to the engine recorded."""
    from smolql.backends.openvino_cpu import OpenVinoSession

    class Recorded(OpenVinoSession):
        calls: list[list[int]]

        def run_many(self, batches):
            self.calls.append([len(b) for b in batches])
            return super().run_many(batches)

    return Recorded


def test_a_profile_times_the_engine_as_the_run_hands_it_batches(monkeypatch):
    """The profile's inference rate sizes the plan, so it is timed as the run will call the
    engine: a turn's batches together where the stages take turns, one batch where not."""
    from conftest import real_jpegs

    from smolql.backends.openvino_cpu import OpenVinoBackend
    from smolql.config import cores
    from smolql.planner.space import PhysicalPlan
    from smolql.profile.measure import WARMUP_BATCHES, SampleImage, run_plan

    if OpenVinoBackend().unavailable_reason():
        pytest.skip("openvino is not installed")
    Recorded = recorded_openvino()
    opened: list = []

    def open_recorded(self, spec, precision, threads, batch_size):
        opened.append(Recorded(spec, precision, threads, batch_size))
        opened[-1].calls = []
        return opened[-1]

    monkeypatch.setattr(OpenVinoBackend, "open", open_recorded)
    plan = PhysicalPlan("efficientnet_lite0", backend="openvino", precision="fp32")
    images = [SampleImage(i, str(p), 1, None, {}) for i, p in enumerate(real_jpegs(8))]
    n = cores()
    taking_turns = run_plan(plan, images, 16, workers=n, threads=n, timed=3)
    side_by_side = run_plan(plan, images, 16, workers=1, threads=max(1, n - 1), timed=3)
    turns, alone = (s.calls[WARMUP_BATCHES : WARMUP_BATCHES + 3] for s in opened)
    assert turns == [[16] * 4] * 3  # a turn: 64 images in batches of 16
    assert alone == [[16]] * 3
    for run in (taking_turns, side_by_side):
        assert len(run.infer_s) == 3 and all(s > 0 for s in run.infer_s)
        assert len(run.predictions) == 8
