"""Build the C extension ``smolql._jpeg`` against the system libjpeg-turbo (see pyproject.toml)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "smolql._jpeg",
            sources=["smolql/_jpeg.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O3", "-Wall"],
        )
    ]
)
