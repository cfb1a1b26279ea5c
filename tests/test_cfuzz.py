"""No crash on any image bytes: the C extensions built with AddressSanitizer and UBSan and
fuzzed (``tests/cfuzz.py``), and regressions for what that found."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import real_jpegs

from smolql import _fused

CFUZZ = Path(__file__).with_name("cfuzz.py")
# The slow tier's count; `python tests/cfuzz.py run ... 50000 ...` is the full run.
INPUTS = int(os.environ.get("SMOLQL_CFUZZ_INPUTS", "10000"))


@pytest.mark.parametrize(
    ("x_axis", "shape", "says"),
    [
        # Found by the sanitized fuzz: an output pixel past the input made a negative row
        # count and a malloc of 2^64 - 20 MB (AddressSanitizer: allocation-size-too-big).
        ((1.0, 1000, 10, 0), (3, 5, 5), "maps outside the input"),
        ((float("nan"), 0, 10, 0), (3, 5, 5), "scale must be positive"),  # NaN passed <= 0
        ((1e9, 0, 10, 0), (3, 5, 5), "below 65536"),  # the filter size overflowed an int
        ((2.0, 0, 10, 0), (3, 0, 5), "non-empty"),  # read bounds[0] of an empty allocation
    ],
)
def test_the_fused_resize_refuses_geometry_it_cannot_serve(x_axis, shape, says):
    src = np.zeros((10, 10, 4), np.uint8)
    out = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=says):
        _fused.resize_normalize(src, out, x_axis, (2.0, 0, 10, 0), (1.0,) * 3, (0.0,) * 3)


@pytest.mark.slow
def test_sanitized_extensions_survive_fuzzed_jpegs(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc: the sanitized build needs it")
    sys.path.insert(0, str(CFUZZ.parent))
    import cfuzz

    env = cfuzz.environment()
    if not os.path.exists(env["LD_PRELOAD"]):
        pytest.skip("gcc has no AddressSanitizer runtime (libasan) here")
    cfuzz.build(tmp_path / "asan")
    images = [str(p) for p in real_jpegs(12)]
    log = tmp_path / "log"
    proc = subprocess.run(
        [sys.executable, str(CFUZZ), "run", str(tmp_path / "asan"), "7", str(INPUTS), str(log),
         *images],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"exit {proc.returncode} (86: AddressSanitizer, 87: UBSan); input kept at"
        f" {log}.last\n{proc.stderr[-4000:]}"
    )
    assert f"{INPUTS} inputs, seed 7: no sanitizer report" in proc.stdout
    assert "decoded and resized" in proc.stdout  # the fuzz reached the resize, not only headers
