"""Helpers shared by the benchmarks: where the sample lives, timing, printing ratios."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SMOLQL_SAMPLE", REPO.parent / "shared/data/imagenet-sample"))


def sample_files() -> list[Path]:
    files = sorted(SAMPLE.glob("*.JPEG"))
    if not files:
        raise SystemExit(f"no sample images at {SAMPLE} (set SMOLQL_SAMPLE)")
    return files


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median wall seconds of ``run()`` over ``repeats`` calls, after ``warmup`` untimed."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_rate(run: Callable[[], int], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Images per second of ``run`` (which returns how many images it did): median and all."""
    for _ in range(warmup):
        run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def report(rows: list[tuple[str, float, list[float]]], baseline: str) -> None:
    """Print images/s and the ratio to ``baseline`` for each row."""
    base = dict((name, rate) for name, rate, _ in rows)[baseline]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'pipeline':<{width}}  {'images/s':>9}  {'vs ' + baseline:>12}  runs")
    for name, rate, runs in rows:
        spread = ", ".join(f"{r:.0f}" for r in runs)
        print(f"{name:<{width}}  {rate:9.1f}  {rate / base:11.2f}x  [{spread}]")


def host_line() -> str:
    """The host's cores and the CPU flags that change the answer (AVX-512, VNNI, bf16)."""
    from smolql.backends.cpu import cpu_flags
    from smolql.config import cores

    flags = cpu_flags()
    return (
        f"host: {cores()} cores; avx512f {'avx512f' in flags}, VNNI"
        f" {bool(flags & {'avx512_vnni', 'avx_vnni'})}, bf16 {'avx512_bf16' in flags}"
    )
