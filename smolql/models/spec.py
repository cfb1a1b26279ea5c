"""A registered classification model: how to build it, its weights, preprocessing and labels."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

import pyarrow as pa

from smolql.errors import InferenceError
from smolql.ops.transform import Transform

# What a classification model's task gives per image: its best classes, best first.
TOPK = pa.list_(
    pa.struct([("class_index", pa.int32()), ("label", pa.string()), ("score", pa.float64())])
)


@dataclass(frozen=True)
class ModelSpec:
    """Everything SmolQL needs to run a classifier.

    ``build(weights_path)`` returns a ``torch.nn.Module`` in eval mode with the weights loaded.
    ``weights`` is a file path; a model whose weights must come from the user has
    ``weights=None`` until :func:`smolql.models.registry.set_weights` gives it one.
    """

    name: str
    build: Callable[[str], object] = field(compare=False, repr=False)
    transform: Transform
    labels: tuple[str, ...] = field(repr=False)
    weights: str | None = None
    family: str = ""
    description: str = ""
    base: str = ""  # the model this one was fine-tuned from (low-resolution-aware training)
    onnx: str | None = None  # a user's ONNX file (normalised): no torch module, fixed input

    @property
    def input_size(self) -> int:
        return self.transform.crop

    def weights_path(self) -> str:
        if not self.weights:
            raise InferenceError(
                f"model {self.name!r} needs a weights file: call "
                f"smolql.models.set_weights({self.name!r}, PATH) or set "
                f"SMOLQL_WEIGHTS_{self.name.upper()}=PATH (a state dict saved by torch.save)"
            )
        if not os.path.isfile(self.weights):
            raise InferenceError(f"weights file for {self.name!r} not found", file=self.weights)
        return self.weights

    def weights_hash(self) -> str:
        """Content hash of the weights file (names the model version in caches)."""
        path = self.weights_path()
        st = os.stat(path)
        return _file_hash(path, st.st_size, st.st_mtime_ns)

    def load(self):
        """Build the torch module; the architecture's chatter on stdout is swallowed."""
        path = self.weights_path()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                module = self.build(path)
        except Exception as e:
            raise InferenceError(f"cannot load model {self.name!r}: {e}", file=path) from e
        return module.eval()

    def with_weights(self, path: str) -> ModelSpec:
        return replace(self, weights=os.path.abspath(path))


@cache
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def torch_form_available() -> bool:
    """Whether a user's ONNX model can become a torch module here (onnx2torch, an optional
    extra): the torch backend, other input sizes and fine-tuning need it."""
    import importlib.util

    return importlib.util.find_spec("onnx2torch") is not None


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names (torchvision's list, shipped as a data file so that naming
    a model does not import torchvision)."""
    text = resources.files("smolql.models").joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(text.splitlines())
