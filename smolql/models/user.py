"""Users' own models: an ONNX classifier (or a torchvision architecture with a weights file),
its labels and its preprocessing, stored in the database (``smolql.user_models``: the database
stays portable with its models) and registered on every connect like a built-in, so that
``classify(image, 'NAME')`` plans and runs it.

On ``add`` the ONNX graph is checked and normalised once: one image input (NCHW, 3 channels,
``input_size`` square; an NHWC model gets a transpose in front), renamed ``images`` with a
dynamic batch, and its first output renamed ``logits``; a test inference must give one score
per label. ONNX Runtime and OpenVINO (and TensorRT on a GPU) run the graph itself, at fp32,
bf16 where the CPU has it, and int8 after calibration; its torch form (onnx2torch, an optional
extra: ``smolql[models]``) is what the torch backend runs, what other input sizes are exported
from and what low-resolution-aware training fine-tunes.

A torchvision architecture (any of ``torchvision.models``' classifiers, built with one output
per label) with a state-dict file is a torch module like the built-ins: every backend, smaller
inputs and low-resolution-aware fine-tuning apply to it. So is a user's own architecture named
by a Python entry point, ``python:package.module:factory`` with ``factory(num_classes=N)``
returning the module: the database stores the name and the weights (the code must be
importable where the database is opened; a clear error says so when it is not).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import duckdb
import numpy as np

from smolql.errors import InferenceError
from smolql.models.export import INPUT_NAME, OUTPUT_NAME, cache_dir
from smolql.models.registry import register_model
from smolql.models.spec import ModelSpec, torch_form_available
from smolql.ops.transform import IMAGENET_MEAN, IMAGENET_STD, Transform
from smolql.storage.user_models import replace_user_model, user_model_files, user_models

LAYOUTS = ("NCHW", "NHWC")
PYTHON = "python:"  # an ``arch`` naming a user's factory rather than a torchvision model
REGISTERED: set[str] = set()  # names registered from a database in this process


@dataclass(frozen=True)
class UserModel:
    name: str
    labels: tuple[str, ...]
    input_size: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "NCHW"
    source: str = ""


def read_labels(path: str) -> tuple[str, ...]:
    """One label per line (a ``.txt``), or a JSON list."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InferenceError(f"cannot read the labels: {e.strerror or e}", file=path) from e
    if path.lower().endswith(".json"):
        try:
            labels = json.loads(text)
        except ValueError as e:
            raise InferenceError(f"labels file is not JSON: {e}", file=path) from e
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InferenceError("a JSON labels file must hold a list of strings", file=path)
        return tuple(labels)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def normalise(data: bytes, input_size: int, layout: str, where: str) -> tuple[bytes, int]:
    """The checked, renamed graph and its number of classes (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    try:
        model = onnx.load_model_from_string(data)
        graph = model.graph
    except Exception as e:
        raise InferenceError(f"not an ONNX model ({type(e).__name__}: {e})", file=where) from e
    if not graph.node:
        raise InferenceError("not an ONNX model (no graph)", file=where)
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or not graph.output:
        raise InferenceError(
            f"an image classifier takes one input and gives scores; this model has"
            f" {len(inputs)} inputs and {len(graph.output)} outputs",
            file=where,
        )
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.dim_value > 0 else None for d in dims]
    if layout == "NCHW":
        want = [None, 3, input_size, input_size]
    else:
        want = [None, input_size, input_size, 3]
    pairs = zip(shape[1:], want[1:], strict=False)
    if len(shape) != 4 or any(s is not None and s != w for s, w in pairs):
        seen = "x".join("?" if s is None else str(s) for s in shape)
        wanted = "x".join("N" if w is None else str(w) for w in want)
        raise InferenceError(
            f"the model's input is {seen} but --input-size {input_size} --layout {layout} means"
            f" {wanted}",
            file=where,
        )
    old_in, old_out = inputs[0].name, graph.output[0].name
    _rename(graph, old_out, OUTPUT_NAME)
    if layout == "NHWC":
        graph.node.insert(
            0, helper.make_node("Transpose", [INPUT_NAME], [old_in], perm=[0, 2, 3, 1])
        )
        graph.input.remove(inputs[0])
    else:
        _rename(graph, old_in, INPUT_NAME)
        graph.input.remove(inputs[0])
    elem = inputs[0].type.tensor_type.elem_type or TensorProto.FLOAT
    graph.input.insert(
        0, helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", 3, input_size, input_size])
    )
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if out_dims:
        out_dims[0].dim_param = "batch"
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise InferenceError(f"the ONNX model does not check: {e}", file=where) from e
    blob = model.SerializeToString()
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        probe = np.zeros((2, 3, input_size, input_size), np.float32)
        out = session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
    except Exception as e:
        raise InferenceError(f"the ONNX model does not run on a test batch: {e}", file=where) from e
    if out.ndim != 2 or out.shape[0] != 2:
        raise InferenceError(
            f"the model's first output has shape {out.shape} for a batch of 2; a classifier gives"
            " (batch, classes)",
            file=where,
        )
    return blob, int(out.shape[1])


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _check(model: UserModel, builtin: set[str]) -> None:
    if model.name in builtin:
        raise InferenceError(f"{model.name!r} is a built-in model's name; choose another")
    if model.layout not in LAYOUTS:
        raise InferenceError(f"layout must be one of {', '.join(LAYOUTS)}, not {model.layout!r}")
    try:
        Transform(model.resize, model.input_size, model.mean, model.std)
    except ValueError as e:
        raise InferenceError(f"model {model.name!r}: {e}") from e


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InferenceError(f"cannot read the {what}: {e.strerror or e}", file=path) from e


def add(
    con: duckdb.DuckDBPyConnection, model: UserModel, onnx_file: str, *, builtin: set[str]
) -> ModelSpec:
    """Check, store and register a user's ONNX model (replacing a user model of that name)."""
    _check(model, builtin)
    blob, classes = normalise(_read(onnx_file, "ONNX file"), model.input_size, model.layout,
                              onnx_file)  # fmt: skip
    _same_length(classes, model)
    return _store(con, model, {"onnx": blob, "hash": hashlib.sha256(blob).hexdigest()},
                  os.path.abspath(onnx_file))  # fmt: skip


def add_torchvision(
    con: duckdb.DuckDBPyConnection,
    model: UserModel,
    arch: str,
    weights_file: str,
    *,
    builtin: set[str],
) -> ModelSpec:
    """Check, store and register a torchvision architecture with a user's state dict."""
    import torch

    _check(model, builtin)
    if model.layout != "NCHW":
        raise InferenceError("a torch model takes NCHW input (no --layout NHWC)")
    data = _read(weights_file, "weights file")
    digest = hashlib.sha256(data).hexdigest()
    path = _materialise(model.name, digest, data, ".pt")
    try:
        module = _tv_builder(arch, len(model.labels))(path).eval()
        with torch.no_grad():
            out = module(torch.zeros(1, 3, model.input_size, model.input_size))
    except InferenceError:
        raise
    except Exception as e:
        raise InferenceError(
            f"the weights do not fit {_arch_name(arch)} with {len(model.labels)} classes"
            f" ({type(e).__name__}: {str(e)[:300]})",
            file=weights_file,
        ) from e
    _same_length(int(out.shape[-1]), model)
    return _store(con, model, {"arch": arch, "weights": data, "hash": digest},
                  os.path.abspath(weights_file))  # fmt: skip


def _arch_name(arch: str) -> str:
    if arch.startswith(PYTHON):
        return f"your architecture {arch.removeprefix(PYTHON)}"
    return f"torchvision {arch}"


def _same_length(classes: int, model: UserModel) -> None:
    if classes != len(model.labels):
        raise InferenceError(
            f"the model gives {classes} scores but the labels file has {len(model.labels)}"
            " labels; they must match one to one"
        )


def _store(con: duckdb.DuckDBPyConnection, model: UserModel, payload: dict, source: str):
    row = {
        "name": model.name,
        "labels": list(model.labels),
        "input_size": model.input_size,
        "resize": model.resize,
        "mean": list(model.mean),
        "std": list(model.std),
        "layout": model.layout,
        "source": source,
        "onnx": None,
        "arch": None,
        "weights": None,
        **payload,
    }
    replace_user_model(con, row)
    return _register(row)


def register_stored(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Register the database's user models (their files written to the cache folder once,
    named by content)."""
    names = []
    for meta in user_models(con):
        if not os.path.exists(_file(meta)):
            meta = {**meta, **user_model_files(con, meta["name"])}
        _register(meta)
        names.append(meta["name"])
    return names


def _file(row: dict) -> str:
    suffix = ".pt" if row.get("arch") else ".onnx"
    return str(cache_dir() / "user" / f"{row['name']}-{row['hash'][:16]}{suffix}")


def _materialise(name: str, digest: str, data: bytes | None, suffix: str) -> str:
    path = str(cache_dir() / "user" / f"{name}-{digest[:16]}{suffix}")
    if not os.path.exists(path):
        if data is None:
            raise InferenceError(f"model {name!r}: its stored file is missing")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def _register(row: dict) -> ModelSpec:
    transform = Transform(row["resize"], row["input_size"], tuple(row["mean"]), tuple(row["std"]))
    labels = tuple(row["labels"])
    if row.get("arch"):
        path = _materialise(row["name"], row["hash"], row.get("weights"), ".pt")
        spec = ModelSpec(
            name=row["name"],
            build=_tv_builder(row["arch"], len(labels)),
            transform=transform,
            labels=labels,
            weights=path,
            family="python" if row["arch"].startswith(PYTHON) else "torchvision",
            description=f"{_arch_name(row['arch'])} with your weights ({row['source']})",
        )
    else:
        path = _materialise(row["name"], row["hash"], row.get("onnx"), ".onnx")
        spec = ModelSpec(
            name=row["name"],
            build=_onnx_module(row["name"]),
            transform=transform,
            labels=labels,
            weights=path,
            family="onnx",
            description=f"your ONNX model ({row['source']})",
            onnx=path,
        )
    REGISTERED.add(spec.name)
    return register_model(spec, replace=True)


def python_arch(entry_point: str) -> str:
    """``package.module:factory`` as stored (checked for its shape; imported on use)."""
    module, _, factory = entry_point.partition(":")
    if not module or not factory or not all(p.isidentifier() for p in factory.split(".")):
        raise InferenceError(
            f"a Python model is named MODULE:FACTORY (e.g. mypkg.nets:small_cnn), not"
            f" {entry_point!r}"
        )
    return PYTHON + entry_point


def _factory(arch: str):
    """The callable building ``arch``'s module: a torchvision model or a user's factory."""
    import importlib

    if arch.startswith(PYTHON):
        module_name, _, attr = arch.removeprefix(PYTHON).partition(":")
        try:
            make = importlib.import_module(module_name)
            for part in attr.split("."):
                make = getattr(make, part)
        except (ImportError, AttributeError) as e:
            raise InferenceError(
                f"cannot import the model's factory {arch.removeprefix(PYTHON)} ({e}); install"
                " or put on PYTHONPATH the package that defines it"
            ) from e
        if not callable(make):
            raise InferenceError(f"{arch.removeprefix(PYTHON)} is not callable")
        return lambda classes: make(num_classes=classes)
    import torchvision

    make = getattr(torchvision.models, arch, None)
    if make is None or not callable(make) or arch.startswith("_"):
        raise InferenceError(f"torchvision has no model {arch!r}")
    return lambda classes: make(weights=None, num_classes=classes)


def _tv_builder(arch: str, classes: int):
    def build(weights: str):
        import torch

        module = _factory(arch)(classes)
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return module

    return build


def _onnx_module(name: str):
    """Builds an ONNX model's torch form (onnx2torch): what the torch backend runs, what
    low-resolution-aware training fine-tunes, and what other input sizes are exported from."""

    def build(weights: str):
        if not torch_form_available():
            raise InferenceError(
                f"model {name!r} is an ONNX model: running it with torch, at another input"
                " size or fine-tuning it needs its torch form: pip install onnx2torch (or use"
                " backend onnxruntime or openvino)"
            )
        from onnx2torch import convert

        return convert(weights)

    return build
