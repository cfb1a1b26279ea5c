"""Export models to ONNX once and cache the files on disk.

The cache key is the weights' content hash, the input shape and the opset, so a changed
weights file gets a new export and an unchanged one is never exported twice.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

from smolql.errors import InferenceError
from smolql.models.spec import ModelSpec

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def cache_dir() -> Path:
    """``$SMOLQL_CACHE``, else ``$XDG_CACHE_HOME/smolql``, else ``~/.cache/smolql``."""
    if os.environ.get("SMOLQL_CACHE"):
        return Path(os.environ["SMOLQL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smolql"


def export_key(spec: ModelSpec) -> str:
    size = spec.input_size
    raw = f"{spec.name}|{spec.weights_hash()}|3x{size}x{size}|opset{OPSET}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def onnx_path(spec: ModelSpec) -> Path:
    """The cached ONNX file for ``spec`` (batch dimension dynamic), exporting it if needed;
    a user's ONNX model is its own (normalised) file."""
    if spec.onnx:
        return Path(spec.onnx)
    target = cache_dir() / "onnx" / f"{spec.name}-{export_key(spec)}.onnx"
    if target.exists():
        return target
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    module = spec.load()
    size = spec.input_size
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                torch.zeros(1, 3, size, size),
                tmp,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, target)  # another process may have raced us: same content, fine
    except Exception as e:
        raise InferenceError(f"ONNX export of {spec.name!r} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target
