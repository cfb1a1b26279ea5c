"""Post-training int8 quantisation of a model's ONNX export, for two engines:

* ONNX Runtime static QDQ: weights per channel, activation ranges by min/max over the
  calibration images; the 7-bit range (``reduce_range``) only on CPUs without VNNI, whose u8 x
  s8 multiply-adds would saturate at 8 bits (it costs about 2 points of top-1 where it is used);
* OpenVINO through NNCF post-training quantisation: the mixed preset (symmetric weights,
  asymmetric activations), per-channel weights and fast bias correction, on the graph as
  OpenVINO's converter folds it. Read as it is, an export's depthwise weights pass through
  shape arithmetic (and EfficientNet-Lite's "same" padding through a ``Pad`` computed from the
  input's shape); NNCF then leaves those convolutions in fp32 (EfficientNet-Lite0: 33 of 49
  in u8 unfolded, all 49 folded; ``tests/test_int8.py``). Rates: ``benchmarks/int8.py``,
  ``benchmarks/results/int8-no-bf16.txt``.

Activations are calibrated on real preprocessed images (at most :data:`CALIBRATION_IMAGES`
of the catalog being queried or profiled), so an int8 engine exists only after something has
given it a sample; it is cached beside the fp32 export, keyed by that export, and stamped
with the digest of its sample and settings (written last: a killed run leaves no stamp).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from smolql.errors import InferenceError
from smolql.models.export import INPUT_NAME, cache_dir, export_key, onnx_path
from smolql.models.spec import ModelSpec

CALIBRATION_BATCH = 8
CALIBRATION_IMAGES = 300  # at most: enough for stable ranges (measured: benchmarks/int8.py)


def int8_path(spec: ModelSpec) -> Path:
    return cache_dir() / "onnx" / f"{spec.name}-{export_key(spec)}-int8.onnx"


def openvino_int8_path(spec: ModelSpec) -> Path:
    return cache_dir() / "openvino" / f"{spec.name}-{export_key(spec)}-int8.xml"


def _stamp(path: Path) -> Path:
    return path.with_suffix(".calibration")


def ort_settings(reduce_range: bool) -> str:
    return f"onnxruntime static QDQ, minmax, per-channel, reduce_range={reduce_range}"


OPENVINO_SETTINGS = "nncf mixed preset, per-channel, fast bias correction, folded graph"


def stamp_of(path: Path) -> str:
    """The stamp of the engine at ``path`` (its settings and its sample's digest), or "" where
    there is none: what tells one calibration's engine from the next."""
    try:
        return _stamp(path).read_text() if path.exists() else ""
    except OSError:
        return ""


def is_quantized(path: Path, settings: str) -> bool:
    """An engine at ``path`` made with ``settings`` (an engine made otherwise, e.g. by an older
    SmolQL, is made again)."""
    return stamp_of(path).split("\n")[0] == settings


def int8_model(spec: ModelSpec, reduce_range: bool) -> Path:
    """The calibrated ONNX Runtime int8 model, or a clear error when none was made yet."""
    return _made(int8_path(spec), ort_settings(reduce_range), spec)


def openvino_int8_model(spec: ModelSpec) -> Path:
    """The calibrated OpenVINO int8 model (IR ``.xml`` beside its ``.bin``)."""
    return _made(openvino_int8_path(spec), OPENVINO_SETTINGS, spec)


def _made(path: Path, settings: str, spec: ModelSpec) -> Path:
    if not is_quantized(path, settings):
        raise InferenceError(
            f"no int8 model for {spec.name!r} at {spec.input_size} px yet: int8 needs calibration"
            " images; a query over a catalog makes one (`SET smolql.precision = 'int8'`), as"
            " does `smolql profile CATALOG --precision int8`"
        )
    return path


def _stamp_text(calibration: np.ndarray, settings: str) -> str:
    """The engine's settings, then the digest of its calibration images."""
    data = np.ascontiguousarray(calibration[:CALIBRATION_IMAGES]).tobytes()
    return f"{settings}\n{hashlib.sha256(data).hexdigest()[:16]}"


def quantize(spec: ModelSpec, calibration: np.ndarray, *, reduce_range: bool = True) -> Path:
    """Quantise ``spec``'s export for ONNX Runtime with activation ranges from
    ``calibration`` (N, 3, H, W) float32 (its first :data:`CALIBRATION_IMAGES`); 7-bit
    ranges with ``reduce_range`` (the caller knows the CPU)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = calibration[:CALIBRATION_IMAGES]
    target = int8_path(spec)
    digest = _stamp_text(calibration, ort_settings(reduce_range))
    if stamp_of(target) == digest:
        return target

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [
                    {INPUT_NAME: calibration[i : i + CALIBRATION_BATCH]}
                    for i in range(0, len(calibration), CALIBRATION_BATCH)
                ]
            )

        def get_next(self):
            return next(self.batches, None)

    target.parent.mkdir(parents=True, exist_ok=True)
    _stamp(target).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        out = os.path.join(tmp, "int8.onnx")
        try:
            quant_pre_process(str(onnx_path(spec)), prepared, skip_symbolic_shape=True)
            quantize_static(
                prepared,
                out,
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=reduce_range,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as e:
            raise InferenceError(f"int8 quantisation of {spec.name!r} failed: {e}") from e
        os.replace(out, target)
    _stamp(target).write_text(digest)
    return target


def quantize_openvino(spec: ModelSpec, calibration: np.ndarray) -> Path:
    """Quantise ``spec``'s export for OpenVINO with NNCF, calibrated on ``calibration``."""
    import nncf
    import openvino as ov

    calibration = calibration[:CALIBRATION_IMAGES]
    target = openvino_int8_path(spec)
    digest = _stamp_text(calibration, OPENVINO_SETTINGS)
    if stamp_of(target) == digest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _stamp(target).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            model = ov.convert_model(str(onnx_path(spec)))  # folded: see the module's note
            data = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
            quantized = nncf.quantize(
                model,
                data,
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(calibration),
                fast_bias_correction=True,
            )
            xml = os.path.join(tmp, "int8.xml")
            ov.save_model(quantized, xml, compress_to_fp16=False)
        except Exception as e:
            raise InferenceError(f"int8 quantisation of {spec.name!r} failed: {e}") from e
        os.replace(os.path.join(tmp, "int8.bin"), target.with_suffix(".bin"))
        shutil.move(xml, target)
    _stamp(target).write_text(digest)
    return target
