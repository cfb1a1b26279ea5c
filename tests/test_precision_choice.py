"""The default precision is chosen soundly: a reduced precision (bf16) becomes the default only
when the rate at which it changes answers against fp32 is, at 95% confidence, within 1%
(labelled answers lost, where the catalog has labels); the reason, with its numbers, is in
EXPLAIN; a profile measures bf16 wherever this machine offers it."""

from __future__ import annotations

import warnings

import pytest
from conftest import MANIFEST, sample_files

import smolql
from smolql.planner.calibration import Measurement
from smolql.planner.confidence import upper_bound
from smolql.planner.engines import TOLERANCE, pick, profile_precisions

FP32 = Measurement("onnxruntime", "fp32", 32, 100.0, 1.0)


def bf16(**seen) -> Measurement:
    return Measurement("openvino", "bf16", 32, 240.0, 1.0, **seen)


def test_the_bound_is_exact_and_shrinks_with_more_images():
    assert upper_bound(0, 14) == pytest.approx(1 - 0.05 ** (1 / 14), rel=1e-9)
    assert upper_bound(0, 600) < 0.005 < upper_bound(0, 590)
    bounds = [upper_bound(n // 200, n) for n in (200, 400, 1000, 4000)]  # 0.5% observed
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] < TOLERANCE < bounds[0]
    assert upper_bound(5, 5) == 1.0 and upper_bound(0, 0) == 1.0


@pytest.mark.parametrize(
    ("seen", "used", "words"),
    [
        ({}, False, "was not compared with fp32"),  # never compared: not the default
        ({"compared": 14}, False, "0 of 14 answers"),  # the demo catalog: too few to show 1%
        ({"compared": 500, "disagreements": 3}, False, "up to 1.54%"),  # 0.6% seen, unproven
        ({"compared": 500, "disagreements": 3, "losses": 1}, True, "loses 1 of 500 labelled"),
        ({"compared": 1000, "disagreements": 1}, True, "changes 1 of 1000 answers"),
    ],
)
def test_a_reduced_precision_is_the_default_only_when_shown_within_tolerance(seen, used, words):
    chosen, reason = pick([FP32, bf16(**seen)])
    assert (chosen.precision == "bf16") == used
    assert words in reason
    assert ("used:" if used else "not used:") in reason
    if not used:
        assert "SET smolql.precision = 'bf16'" in reason or "not compared" in reason


def test_a_slower_reduced_precision_is_never_the_default():
    slow = Measurement("torch", "bf16", 32, 50.0, 1.0, compared=1000)
    chosen, reason = pick([FP32, slow])
    assert chosen.precision == "fp32" and reason == "fp32: no reduced precision is faster here"


def test_a_profile_measures_every_reduced_float_precision_offered_here():
    from smolql.backends.registry import available

    offered = {p for b in available().values() for p in b.capabilities().precisions}
    got = profile_precisions()
    assert got[0] == "fp32" and got[-1] == "int8"
    assert ("bf16" in got) == ("bf16" in offered)


@pytest.mark.slow
def test_calibration_compares_bf16_on_the_catalogs_labelled_images(tmp_path, monkeypatch):
    """Calibrating on a labelled catalog compares each faster reduced precision with fp32 on
    all its images (up to 1,000) and counts lost labelled answers; the choice follows the
    bound, and EXPLAIN gives the reason. On a CPU without a faster reduced precision, the
    reason says so."""
    from smolql.models.registry import get_model
    from smolql.planner import calibration

    monkeypatch.setattr(calibration, "folder", lambda: tmp_path / "calibration")
    files = sample_files(200)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "p.duckdb")) as con:
        con.create_catalog("c", str(folder), renditions=(), labels=str(MANIFEST), progress=False)
        con.calibrate(["efficientnet_lite0"], catalog="c")
        stored = calibration.load(get_model("efficientnet_lite0"))
        plan = "\n".join(con.sql("EXPLAIN SELECT classify(image) FROM c")["plan"].to_pylist())
    assert stored is not None and stored.reason and stored.reason in plan
    fp32 = max(m.images_per_s for m in stored.measurements if m.precision == "fp32")
    faster = [m for m in stored.measurements if m.precision != "fp32" and m.images_per_s > fp32]
    if not faster:
        assert stored.chosen.precision == "fp32"
        assert stored.reason == "fp32: no reduced precision is faster here"
        return
    for m in faster:
        assert m.compared == len(files) and 0 <= m.losses <= m.disagreements
    shown = any(upper_bound(m.losses, m.compared) <= TOLERANCE for m in faster)
    assert (stored.chosen.precision != "fp32") == shown
    assert f"of {len(files)} labelled answers" in stored.reason
