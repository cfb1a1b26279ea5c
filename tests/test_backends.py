"""One conformance suite for every inference backend, on real images. A backend that cannot run
here is skipped with its reason; nothing is faked."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_jpegs, sample_files

from smolql.backends.registry import backends, get_backend
from smolql.errors import InferenceError
from smolql.models.registry import get_model
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor

PRECISIONS = ("fp32", "bf16", "fp16")


@pytest.fixture(scope="module")
def lite0_inputs():
    spec = get_model("efficientnet_lite0")
    files = real_jpegs()
    files = files[::8] if len(files) >= 500 else files  # 63 of the sample, or 12 photographs
    refs = [ImageRef(i, str(f), 1) for i, f in enumerate(files)]
    tensors = [b.tensor.copy() for b in stream_batches(refs, Preprocessor(spec.transform))]
    batch = np.concatenate(tensors)
    reference = backends()["onnxruntime"].open(spec, "fp32", 2, 32).run(batch)
    return spec, batch, reference


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", sorted(backends()))
def test_backend_conformance(name, precision, lite0_inputs):
    backend = backends()[name]
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"{name}: {reason}")
    caps = backend.capabilities()
    if precision not in caps.precisions or precision in caps.calibrated:
        pytest.skip(f"{name} does not offer {precision} on this machine")
    spec, batch, reference = lite0_inputs
    session = backend.open(spec, precision, threads=2, batch_size=16)
    logits = np.concatenate([session.run(batch[i : i + 16]) for i in range(0, len(batch), 16)])
    assert logits.shape == (len(batch), 1000) and logits.dtype == np.float32
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    if precision == "fp32":
        assert agreement >= 0.995, f"{name}/{precision} top-1 agreement {agreement:.3f}"
        assert np.abs(logits - reference).max() < 1e-3
    else:
        # A reduced precision changes some near-ties (measured on the 500-image sample on an
        # AVX-512 BF16 host: torch/bf16 0.992, openvino/bf16 0.994 agreement), which is why the
        # default-engine choice bounds the changes at 95% confidence before it picks one. Here:
        # every prediction is among fp32's top 5, and on the sample's 63 images at least 98%
        # agree.
        top5 = np.argsort(-reference, axis=1)[:, :5]
        assert all(p in row for p, row in zip(logits.argmax(1), top5, strict=True))
        if len(batch) >= 50:
            assert agreement >= 0.98, f"{name}/{precision} top-1 agreement {agreement:.3f}"
    assert session.run(batch[:5]).shape == (5, 1000)  # a short last batch works


def test_capabilities_are_flags_not_types():
    for backend in backends().values():
        caps = backend.capabilities()
        assert caps.devices and caps.precisions and caps.max_batch > 0


def test_unavailable_backend_names_its_reason():
    missing = [b for b in backends().values() if b.unavailable_reason()]
    for backend in missing:
        with pytest.raises(InferenceError, match="cannot run here"):
            get_backend(backend.name)
    with pytest.raises(InferenceError, match="did you mean 'openvino'"):
        get_backend("openvno")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_int8_needs_calibration_then_stays_close_to_fp32(name, lite0_inputs, tmp_path, monkeypatch):
    backend = backends()[name]
    if backend.unavailable_reason() or "int8" not in backend.capabilities().precisions:
        pytest.skip(f"{name} offers no int8 here (openvino's needs nncf)")
    sample_files()  # int8's agreement is a statistic: it needs the 500-image sample
    monkeypatch.setenv("SMOLQL_CACHE", str(tmp_path))
    spec, batch, reference = lite0_inputs
    assert not backend.is_calibrated(spec, "int8")
    with pytest.raises(InferenceError, match="int8 needs calibration"):
        backend.open(spec, "int8", threads=2, batch_size=16)
    backend.calibrate(spec, "int8", batch[:32])
    assert backend.is_calibrated(spec, "int8")
    session = backend.open(spec, "int8", threads=2, batch_size=16)
    logits = np.concatenate([session.run(batch[i : i + 16]) for i in range(0, len(batch), 16)])
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    # Measured on the 500-image sample with 300 calibration images (benchmarks/int8.py):
    # about 97% agreement and top-1 within 1 point; here 32 calibrate, 63 are compared.
    assert agreement >= 0.9, f"{name} int8 top-1 agreement {agreement:.3f}"
    assert not np.array_equal(logits, reference)  # it really is another model


def test_openvino_streams_give_the_logits_of_one_stream():
    from smolql.backends.openvino_cpu import OpenVinoBackend, OpenVinoSession

    if OpenVinoBackend().unavailable_reason():
        pytest.skip("openvino is not installed")
    spec = get_model("efficientnet_lite0")
    batch = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    one = OpenVinoSession(spec, "fp32", 2, 16, streams=1)
    two = OpenVinoSession(spec, "fp32", 2, 16, streams=2)
    try:
        assert (one.streams, two.streams, one.part, two.part) == (1, 2, 16, 8)
        np.testing.assert_array_equal(two.run(batch), one.run(batch))
        np.testing.assert_array_equal(two.run(batch[:5]), one.run(batch[:5]))  # padded
        np.testing.assert_array_equal(two.run(batch[::2]), one.run(batch[::2]))  # strided
        # Several batches in flight at once (a turn of the executor), each part of each batch
        # landing in its own batch's rows whatever order the requests finish in.
        batches = [batch, batch[:5], batch[::2], batch[3:16]]
        for got, session in ((two.run_many(batches), two), (one.run_many(batches), one)):
            assert [len(g) for g in got] == [16, 5, 8, 13]
            for g, b in zip(got, batches, strict=True):
                np.testing.assert_array_equal(g, session.run(b))
        np.testing.assert_array_equal(np.concatenate(two.run_many(batches)[:1]), one.run(batch))
    finally:
        one.close()
        two.close()
