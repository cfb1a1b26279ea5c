"""The plan space of a classification call: which model, on which input (the original or a
rendition), at which DCT decode scale, DNN input size and backend/precision.

Lossless optimisations (partial decode of the crop, fused resize + normalise) are always on,
so they are not choices. A plan is a value with a stable text key, used in profiles, in the
UDF cache key and in EXPLAIN.

>>> p = PhysicalPlan("efficientnet_lite0", "161:jpeg:75")
>>> p.key
'efficientnet_lite0|161:jpeg:75|dct1|native|onnxruntime/fp32'
>>> PhysicalPlan.from_key(p.key) == p
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smolql.models.spec import ModelSpec, torch_form_available
from smolql.ops.transform import Transform

ORIGINAL = "original"
DCT_SCALES = (1, 2, 4)
SMALLER_INPUTS = (0.75,)  # input sizes tried besides the native one, as fractions of it


@dataclass(frozen=True, order=True)
class PhysicalPlan:
    """One way to evaluate a classification call. ``input_size`` 0 means the model's own."""

    model: str
    source: str = ORIGINAL
    scale: int = 1
    input_size: int = 0
    backend: str = "onnxruntime"
    precision: str = "fp32"

    @property
    def engine(self) -> str:
        """The engine kind, ``backend/precision``."""
        return f"{self.backend}/{self.precision}"

    @property
    def key(self) -> str:
        size = self.input_size or "native"
        return f"{self.model}|{self.source}|dct{self.scale}|{size}|{self.engine}"

    @classmethod
    def from_key(cls, key: str) -> PhysicalPlan:
        model, source, dct, size, engine = key.split("|")
        backend, precision = engine.split("/")
        input_size = 0 if size == "native" else int(size)
        return cls(model, source, int(dct.removeprefix("dct")), input_size, backend, precision)

    def describe(self) -> str:
        """Readable, e.g. ``efficientnet_lite0 on 161:jpeg:75, 168 px, onnxruntime/int8``."""
        parts = [f"{self.model} on {self.source}"]
        if self.scale != 1:
            parts.append(f"DCT 1/{self.scale}")
        if self.input_size:
            parts.append(f"{self.input_size} px")
        parts.append(self.engine)
        return ", ".join(parts)

    def is_reference_input(self) -> bool:
        """Full-quality input: the original at full scale and the model's own size, fp32."""
        return (
            self.source == ORIGINAL
            and self.scale == 1
            and self.input_size == 0
            and self.precision == "fp32"
        )


def sized(spec: ModelSpec, input_size: int) -> ModelSpec:
    """``spec`` run at another DNN input size: the same resize/crop ratio, scaled.

    >>> from smolql.models.registry import get_model
    >>> sized(get_model("efficientnet_lite0"), 168).transform.resize
    192
    """
    if not input_size or input_size == spec.input_size:
        return spec
    t = spec.transform
    resize = round(input_size * t.resize / t.crop)
    # A user's ONNX graph has its input size built in: another size is exported from its
    # torch form, like a built-in's.
    return replace(spec, transform=Transform(resize, input_size, t.mean, t.std), onnx=None)


def smaller_inputs(spec: ModelSpec) -> list[int]:
    """The reduced input sizes tried for a model, multiples of 8 (for a user's ONNX model
    only where its torch form can be built: the graph itself fixes the input size)."""
    if spec.onnx and not torch_form_available():
        return []
    return [int(spec.input_size * f) // 8 * 8 for f in SMALLER_INPUTS]


def enumerate_plans(
    models: list[ModelSpec],
    sources: list[str],
    engines: dict[str, list[tuple[str, str]]],
    *,
    source_short_side: int,
    input_sizes: bool = True,
    trained_for: dict[str, str] | None = None,
) -> list[PhysicalPlan]:
    """Every plan for the given models, sources (``original`` and rendition specs) and each
    model's (backend, precision) engines. DCT scales apply to originals only, and only where the
    scaled short side still covers half the model's crop (``source_short_side`` is the
    catalog's median short side). A low-resolution-trained model (``trained_for[name]`` = its
    rendition) is only paired with that rendition."""
    trained_for = trained_for or {}
    plans = []
    for spec in models:
        own = trained_for.get(spec.name)
        sizes = [0, *smaller_inputs(spec)] if input_sizes else [0]
        for source in [own] if own else sources:
            scales = DCT_SCALES if source == ORIGINAL else (1,)
            for scale in scales:
                if scale > 1 and source_short_side / scale < spec.input_size / 2:
                    continue
                for size in sizes:
                    for backend, precision in engines[spec.name]:
                        plans.append(
                            PhysicalPlan(spec.name, source, scale, size, backend, precision)
                        )
    return plans
