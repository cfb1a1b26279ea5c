"""Reduced precisions against fp32 on the 500 labelled sample images: top-1 agreement with
ONNX Runtime fp32, top-1 accuracy against the labels, and inference images/s, for every
(backend, precision) this machine offers without calibration (bf16 where the CPU has it).

    python benchmarks/precision.py
"""

from __future__ import annotations

import csv
import os
import time

import numpy as np
from common import SAMPLE, sample_files

from smolql.backends.cpu import cpu_flags
from smolql.backends.registry import backends
from smolql.models.registry import get_model
from smolql.ops.loader import preprocessed
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner.engines import candidates

BATCH = 32


def main() -> None:
    flags = cpu_flags()
    print(f"host: {os.cpu_count()} cores; avx512_bf16 {'avx512_bf16' in flags}")
    spec = get_model("efficientnet_lite0")
    files = sample_files()
    with open(SAMPLE / "manifest.csv", newline="") as f:
        labels = {r["file"]: int(r["class_index"]) for r in csv.DictReader(f)}
    truth = np.array([labels[f.name] for f in files])
    refs = [ImageRef(i, str(f), 1) for i, f in enumerate(files)]
    batch = preprocessed(refs, Preprocessor(spec.transform))

    def run(name: str, precision: str) -> tuple[np.ndarray, float]:
        session = backends()[name].open(spec, precision, os.cpu_count() or 1, BATCH)
        session.run(batch[:BATCH])  # warm up
        start = time.perf_counter()
        logits = np.concatenate(
            [session.run(batch[i : i + BATCH]) for i in range(0, len(batch), BATCH)]
        )
        return logits.argmax(1), len(batch) / (time.perf_counter() - start)

    reference, ref_rate = run("onnxruntime", "fp32")
    print(f"{'engine':<20} {'agree w/ fp32':>13} {'top-1':>7} {'img/s':>7}")
    for name, precision in sorted(candidates()):
        top1, rate = (
            (reference, ref_rate)
            if (name, precision) == ("onnxruntime", "fp32")
            else run(name, precision)
        )
        print(
            f"{name + '/' + precision:<20} {(top1 == reference).mean():13.3f}"
            f" {(top1 == truth).mean():7.3f} {rate:7.0f}"
        )


if __name__ == "__main__":
    main()
