"""Fuzz SmolQL's C extensions built with AddressSanitizer and UndefinedBehaviorSanitizer.

``build(folder)`` compiles ``smolql/_jpeg.c`` and ``smolql/_fused.c`` with
``-fsanitize=address,undefined -fno-sanitize-recover=all`` into ``folder``; ``run`` (this file
as a program, under ``LD_PRELOAD=libasan.so``) imports those builds and feeds them seeded
mutations of a JPEG corpus (baseline and progressive, 4:4:4 / 4:2:2 / 4:2:0, greyscale, CMYK,
restart intervals, from real photographs): flipped bits, overwritten and inserted bytes,
truncations, splices, patched frame sizes, with random DCT scales, regions (inside, across and
outside the image), output buffers of the right and of wrong shapes, then the fused resize on
what was decoded with random output sizes and axis geometry. A Python ``ValueError`` is the
expected answer to bad input; a sanitizer report ends the process with exit code 86 (ASan) or 87
(UBSan), and the input that caused it is kept as ``LOG.last``.

    python tests/cfuzz.py build FOLDER
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:exitcode=86 \\
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87 \\
        python tests/cfuzz.py run FOLDER SEED COUNT LOG IMAGES...
"""

from __future__ import annotations

import importlib.util
import io
import os
import platform
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-shared", "-fPIC", "-Wall"]  # fmt: skip
ASAN_EXIT, UBSAN_EXIT = 86, 87


def build(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    simd = ["-msse4.1"] if platform.machine() in ("x86_64", "AMD64") else []
    for name, extra in (("_jpeg", ["-ljpeg"]), ("_fused", simd)):
        src = REPO / "smolql" / f"{name}.c"
        out = folder / f"{name}{suffix}"
        subprocess.run(["gcc", *FLAGS, f"-I{include}", str(src), "-o", str(out), *extra],
                       check=True)  # fmt: skip


def environment() -> dict[str, str]:
    """The environment a sanitized build runs under (the ASan runtime preloaded)."""
    asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    return {
        **os.environ,
        "LD_PRELOAD": asan,
        "ASAN_OPTIONS": f"detect_leaks=0:exitcode={ASAN_EXIT}:verify_asan_link_order=0",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:exitcode={UBSAN_EXIT}",
    }


def _load(folder: Path, name: str):
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}{suffix}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus(images: list[str], rng: random.Random) -> list[bytes]:
    """Small re-encodings of real photographs in every layout the decoder meets."""
    from PIL import Image

    out = []
    for path in images:
        im = Image.open(path).convert("RGB")
        im.thumbnail((rng.randint(24, 200), rng.randint(24, 200)))
        for options in (
            {"quality": 90, "subsampling": 0},
            {"quality": 75, "subsampling": 1},
            {"quality": 60, "subsampling": 2, "progressive": True},
            {"quality": 80, "subsampling": 2, "restart_marker_blocks": 1},
        ):
            buf = io.BytesIO()
            im.save(buf, "JPEG", **options)
            out.append(buf.getvalue())
        for mode in ("L", "CMYK"):
            buf = io.BytesIO()
            im.convert(mode).save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
    return out


def mutate(data: bytes, pool: list[bytes], rng: random.Random) -> bytes:
    b = bytearray(data)
    scan = max(data.find(b"\xff\xda"), 0)  # mostly hit the entropy-coded data, not the header
    for _ in range(rng.choice((0, 1, 1, 2, 3, 8))):
        what = rng.randrange(7)
        lo = scan if rng.random() < 0.7 and scan < len(b) else 0
        i = rng.randrange(lo, len(b)) if b else 0
        if what == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif what == 1 and b:
            b[i] = rng.randrange(256)
        elif what == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif what == 3:
            del b[rng.randrange(len(b) + 1) :]
        elif what == 4:
            other = rng.choice(pool)
            j = rng.randrange(len(other))
            b[i:] = other[j:]
        elif what == 5:
            sof = max(b.find(b"\xff\xc0"), b.find(b"\xff\xc2"))
            if sof >= 0 and sof + 9 <= len(b):
                v = rng.choice((0, 1, 7, 8, 9, 65535, rng.randrange(65536)))
                at = sof + 5 + 2 * rng.randrange(2)
                b[at : at + 2] = v.to_bytes(2, "big")
        elif b:
            b[i : i + 2] = b"\xff" + bytes([rng.choice((0xC0, 0xC2, 0xC4, 0xD9, 0xDA, 0xDB, 0xDD))])
    return bytes(b)


def one(jpeg, fused, np, data: bytes, size: tuple[int, int], rng: random.Random) -> str:
    """One input (from an image of ``size``) through both extensions; what happened."""
    denom = rng.choice((1, 2, 4, 8) * 5 + (0, 3, 16))
    region = None
    if rng.random() < 0.6:
        if rng.random() < 0.05:
            region = tuple(rng.choice((0, 1, 2**32 - 1)) for _ in range(4))
        elif rng.random() < 0.8:  # inside the image
            x, y = (rng.randrange(d) for d in size)
            region = (x, y, rng.randint(1, size[0] - x), rng.randint(1, size[1] - y))
        else:  # across or past its edges
            x, y = (rng.randint(0, int(1.1 * d)) for d in size)
            region = (x, y, *(rng.randint(1, int(1.1 * d) + 1) for d in size))
    try:
        w, h = jpeg.output_size(data, scale_denom=denom, region=region)
    except (ValueError, OverflowError):
        return "refused by output_size"
    if w * h > 4_000_000:
        return "too large to try"
    channels = rng.choice((3, 4, 4))
    shape = [h, w, channels]
    if rng.random() < 0.1:  # a wrong buffer must be refused, never overrun
        shape[rng.randrange(2)] = max(0, shape[0] + rng.choice((-3, -1, 1)))
    out = np.zeros(shape, np.uint8)
    try:
        fancy, context = rng.random() < 0.8, rng.random() < 0.9
        jpeg.decode_into(data, out, scale_denom=denom, region=region, fancy_upsampling=fancy,
                         context=context)  # fmt: skip
    except (ValueError, OverflowError):
        return "refused by decode_into"
    if channels != 4 or not w or not h:
        return "decoded"
    ow, oh = rng.randint(1, 96), rng.randint(1, 96)
    res = np.zeros((3, oh, ow), np.float32)
    axes = []
    for size, out_len in ((w, ow), (h, oh)):
        scale = size / out_len
        axis = [scale, 0, size, 0]
        if rng.random() < 0.2:  # perturbed geometry: must be refused, never read outside
            k = rng.randrange(4)
            axis[k] = rng.choice((0.0, -1.0, 1e-9, 1e9, float("nan"))) if k == 0 else (
                axis[k] + rng.choice((-5, -1, 1, 5, 10**6)))  # fmt: skip
        axes.append(tuple(axis))
    try:
        fused.resize_normalize(out, res, axes[0], axes[1], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    except (ValueError, OverflowError, MemoryError):
        return "decoded, resize refused"
    return "decoded and resized"


def _size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def run(folder: Path, seed: int, count: int, log: Path, images: list[str]) -> int:
    import numpy as np

    jpeg, fused = _load(folder, "_jpeg"), _load(folder, "_fused")
    rng = random.Random(seed)
    pool = corpus(images, rng)
    last = log.with_name(log.name + ".last")
    tally: dict[str, int] = {}
    sizes = [_size(d) for d in pool]
    for n in range(count):
        k = rng.randrange(len(pool))
        data = mutate(pool[k], pool, rng)
        if n % 100 == 0:
            last.write_bytes(data)  # cheap enough every 100; the seed reproduces the rest
        try:
            what = one(jpeg, fused, np, data, sizes[k], rng)
        except MemoryError:
            what = "out of memory (refused)"
        tally[what] = tally.get(what, 0) + 1
    text = f"{count} inputs, seed {seed}: no sanitizer report; " + ", ".join(
        f"{k} {v}" for k, v in sorted(tally.items())
    )
    log.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]))
    else:
        folder, seed, count, log, *images = sys.argv[2:]
        sys.exit(run(Path(folder), int(seed), int(count), Path(log), images))
