"""int8 against fp32 for each built-in EfficientNet-Lite, on the 500 labelled sample images:
top-1 against the labels, the change from fp32, agreement with fp32, and inference images/s
(median of 3 passes over the 500 preprocessed images, all cores, batch 32), for each engine's
int8 as SmolQL makes it (ONNX Runtime static QDQ; OpenVINO through NNCF), calibrated on the
first 300 images in the catalog's order, as a query over this catalog would calibrate it.
Held-out: top-1 on the 200 images that did not calibrate.

    python benchmarks/int8.py [--models efficientnet_lite0 ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time

import numpy as np
from common import SAMPLE, host_line, sample_files

from smolql.backends.registry import backends
from smolql.models.quantize import CALIBRATION_IMAGES
from smolql.models.registry import get_model
from smolql.ops.loader import preprocessed
from smolql.ops.pipeline import ImageRef, Preprocessor

BATCH = 32
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def rate_and_top1(session, batch: np.ndarray) -> tuple[np.ndarray, float]:
    session.run(batch[:BATCH])  # warm up
    rates, top1 = [], None
    for _ in range(3):
        start = time.perf_counter()
        logits = np.concatenate(
            [session.run(batch[i : i + BATCH]) for i in range(0, len(batch), BATCH)]
        )
        rates.append(len(batch) / (time.perf_counter() - start))
        top1 = logits.argmax(1)
    return top1, float(np.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    os.environ["SMOLQL_CACHE"] = tempfile.mkdtemp(prefix="smolql-int8-")  # made here, not reused
    files = sample_files()
    with open(SAMPLE / "manifest.csv", newline="") as f:
        labels = {r["file"]: int(r["class_index"]) for r in csv.DictReader(f)}
    truth = np.array([labels[f.name] for f in files])
    held = slice(CALIBRATION_IMAGES, None)
    threads = os.cpu_count() or 1
    print(host_line())
    print(
        f"{'model':<20} {'engine':<18} {'top-1':>6} {'vs fp32':>8} {'held-out':>9} {'agree':>6}"
        f" {'img/s':>7} {'vs fp32':>8} {'calibrate s':>12}"
    )
    for name in args.models:
        spec = get_model(name)
        refs = [ImageRef(i, str(f), None) for i, f in enumerate(files)]
        batch = preprocessed(refs, Preprocessor(spec.transform))
        ref, ref_rate = rate_and_top1(backends()["onnxruntime"].open(spec, "fp32", threads, BATCH),
                                      batch)  # fmt: skip
        rows = [("onnxruntime/fp32", ref, ref_rate, 0.0)]
        for engine in ("onnxruntime", "openvino"):
            backend = backends()[engine]
            if backend.unavailable_reason() or "int8" not in backend.capabilities().precisions:
                print(f"{name:<20} {engine + '/int8':<18} not offered here")
                continue
            start = time.perf_counter()
            backend.calibrate(spec, "int8", batch[:CALIBRATION_IMAGES])
            took = time.perf_counter() - start
            top1, rate = rate_and_top1(backend.open(spec, "int8", threads, BATCH), batch)
            rows.append((f"{engine}/int8", top1, rate, took))
        base = (ref == truth).mean()
        for engine, top1, rate, took in rows:
            acc = (top1 == truth).mean()
            print(
                f"{name:<20} {engine:<18} {100 * acc:6.1f} {100 * (acc - base):+8.1f}"
                f" {100 * (top1[held] == truth[held]).mean():9.1f}"
                f" {(top1 == ref).mean():6.3f} {rate:7.0f} {rate / ref_rate:7.2f}x {took:12.1f}"
            )
    print(
        "top-1 in percent of the 500 images; vs fp32: points; held-out: the 200 images not used"
        " to calibrate; agree: top-1 equal to fp32's; img/s: inference alone on all cores"
    )


if __name__ == "__main__":
    main()
