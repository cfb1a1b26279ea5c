"""C extensions: ``smolql._jpeg`` (against the system libjpeg-turbo) and ``smolql._fused``."""

import platform

from setuptools import Extension, setup

# SSE4.1 (every x86-64 CPU since 2008) lets _fused run four colour lanes per instruction; other
# machines build the portable C path.
SIMD = ["-msse4.1"] if platform.machine() in ("x86_64", "AMD64") else []

setup(
    ext_modules=[
        Extension(
            "smolql._jpeg",
            sources=["smolql/_jpeg.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O3", "-Wall"],
        ),
        Extension(
            "smolql._fused",
            sources=["smolql/_fused.c"],
            extra_compile_args=["-O3", "-Wall", *SIMD],
        ),
    ]
)
