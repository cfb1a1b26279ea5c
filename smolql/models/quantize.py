"""Post-training int8 quantisation of a model's ONNX export (ONNX Runtime static QDQ).

Activations are calibrated on real preprocessed images, so an int8 model exists only after
something (the profiler) has given it a calibration sample; it is cached beside the fp32
export, keyed by that export and the calibration sample.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from smolql.errors import InferenceError
from smolql.models.export import INPUT_NAME, cache_dir, export_key, onnx_path
from smolql.models.spec import ModelSpec

CALIBRATION_BATCH = 8


def int8_path(spec: ModelSpec) -> Path:
    return cache_dir() / "onnx" / f"{spec.name}-{export_key(spec)}-int8.onnx"


def int8_model(spec: ModelSpec) -> Path:
    """The calibrated int8 model, or a clear error when none was made yet."""
    path = int8_path(spec)
    if not path.exists():
        raise InferenceError(
            f"no int8 model for {spec.name!r} at {spec.input_size} px yet: int8 needs calibration"
            " images; run `smolql profile CATALOG --precision int8` (or "
            "smolql.models.quantize.quantize(spec, images))"
        )
    return path


def quantize(spec: ModelSpec, calibration: np.ndarray) -> Path:
    """Quantise ``spec``'s export with activation ranges from ``calibration`` (N, 3, H, W)
    float32. Weights per channel; 7-bit range, which CPUs without VNNI need to avoid
    saturating their u8 x s8 multiply-adds."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = int8_path(spec)
    digest = hashlib.sha256(np.ascontiguousarray(calibration).tobytes()).hexdigest()[:16]
    stamp = target.with_suffix(".calibration")
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
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
                reduce_range=True,
            )
        except Exception as e:
            raise InferenceError(f"int8 quantisation of {spec.name!r} failed: {e}") from e
        os.replace(out, target)
    stamp.write_text(digest)
    return target
