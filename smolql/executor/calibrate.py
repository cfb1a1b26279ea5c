"""Engines a query needs calibration images for (int8), made the first time a query asks for
one: calibrated on at most 300 images of the catalog its stage reads, once per model and input
size (cached beside the ONNX export, see :mod:`smolql.models.quantize`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import duckdb

from smolql.backends.registry import get_backend
from smolql.errors import InferenceError
from smolql.models.quantize import CALIBRATION_IMAGES
from smolql.ops.loader import preprocessed
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner.physical import Plan
from smolql.storage.schema import image_sample


class CalibrationNotice(UserWarning):
    """A query is making an engine it needs (once): which images calibrate it."""


def ensure_engine(
    con: duckdb.DuckDBPyConnection, plan: Plan, catalog_of: Callable[[], str | None]
) -> None:
    """Make ``plan``'s engine when its precision needs calibration and none exists yet
    (``catalog_of``: the catalog the stage reads, asked only then)."""
    backend = get_backend(plan.backend)
    if backend.is_calibrated(plan.spec, plan.precision):
        return
    catalog = catalog_of()
    if catalog is None:
        raise InferenceError(
            f"{plan.precision} for {plan.spec.name!r} needs calibration images from a catalog:"
            " query a catalog first, or run `smolql profile CATALOG --precision int8`"
        )
    rows = image_sample(con, catalog, CALIBRATION_IMAGES)
    if not rows:
        raise InferenceError(f"catalog {catalog!r} has no images to calibrate {plan.precision}")
    warnings.warn(
        f"calibrating {plan.backend}/{plan.precision} for {plan.spec.name} on {len(rows)} images"
        f" of catalog {catalog!r} (once; the engine is kept for later queries)",
        CalibrationNotice,
        stacklevel=3,
    )
    refs = [ImageRef(i, path, orientation) for i, (path, orientation) in enumerate(rows)]
    images = preprocessed(refs, Preprocessor(plan.spec.transform))
    if not len(images):
        raise InferenceError(f"no image of catalog {catalog!r} decodes: nothing to calibrate on")
    backend.calibrate(plan.spec, plan.precision, images)
