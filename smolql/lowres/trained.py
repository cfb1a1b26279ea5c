"""Low-resolution-aware models live with the database: weights under ``<db>.models/``, a row
in ``smolql.trained_models``, and a registry entry (``<base>@<rendition>``) on every connect."""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import replace

import duckdb

from smolql.models.registry import get_model, models, register_model
from smolql.models.spec import ModelSpec
from smolql.storage.trained import replace_trained, trained


def trained_name(base: str, rendition: str) -> str:
    """The registered name of ``base`` trained for ``rendition``.

    >>> trained_name("efficientnet_lite0", "161:jpeg:75")
    'efficientnet_lite0@161:jpeg:75'
    """
    return f"{base}@{rendition}"


def _builder(base: ModelSpec):
    def build(weights: str):
        import torch

        module = base.build(base.weights_path())
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return module

    return build


def trained_spec(base: ModelSpec, rendition: str, weights: str) -> ModelSpec:
    return replace(
        base,
        name=trained_name(base.name, rendition),
        build=_builder(base),
        weights=os.path.abspath(weights),
        description=f"{base.description}, fine-tuned for {rendition} renditions",
        base=base.name,
        onnx=None,  # a user's ONNX model, fine-tuned: its torch form with the new weights
    )


def save(
    con: duckdb.DuckDBPyConnection,
    folder: str,
    base: ModelSpec,
    rendition: str,
    state_dict: dict,
    *,
    catalog: str,
    images: int,
    epochs: int,
    seconds: float,
) -> ModelSpec:
    """Write the weights (temp file + rename), record and register the model."""
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    data = buf.getvalue()
    name = trained_name(base.name, rendition)
    os.makedirs(folder, exist_ok=True)
    slug = name.replace("@", "-at-").replace(":", "-")
    path = os.path.join(folder, f"{slug}-{hashlib.sha256(data).hexdigest()[:12]}.pt")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    old = replace_trained(
        con,
        {
            "name": name,
            "base": base.name,
            "rendition": rendition,
            "weights": path,
            "catalog": catalog,
            "train_images": images,
            "epochs": epochs,
            "seconds": seconds,
        },
    )
    for previous in old:
        if previous != path and os.path.exists(previous):
            os.remove(previous)
    # What a killed earlier run of this model left: a temp file, or weights written but never
    # recorded (the row is committed after the file is in place).
    mine = re.compile(re.escape(slug) + r"-[0-9a-f]{12}\.pt(\.tmp)?")
    for leftover in os.listdir(folder):
        if mine.fullmatch(leftover) and os.path.join(folder, leftover) != path:
            os.remove(os.path.join(folder, leftover))
    return register_model(trained_spec(base, rendition, path), replace=True)


def register_stored(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Register the database's trained models (their base models must be registered)."""
    rows = [(r["name"], r["base"], r["rendition"], r["weights"]) for r in trained(con)]
    if not rows:
        return []  # no plugin loading (and no torchvision import) at connect for nothing
    names = []
    known = models()
    for name, base, rendition, weights in rows:
        if base not in known or not os.path.exists(weights):
            continue  # a missing plugin or a deleted file: the model is simply not offered
        current = known.get(name)
        if current is None or current.weights != os.path.abspath(weights):
            register_model(trained_spec(get_model(base), rendition, weights), replace=True)
        names.append(name)
    return names


def trained_renditions(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Trained model name -> the rendition it was trained for."""
    return {r["name"]: r["rendition"] for r in trained(con)}
