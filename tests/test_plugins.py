"""Extension points (issue 14, point 5): a backend from another package, found through the
``smolql.backends`` entry-point group exactly as the built-ins are, and used from SQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # builds and installs a package

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "smolql-example-backend"
version = "0.1.0"

[project.entry-points."smolql.backends"]
ort_plain = "smolql_example_backend:register"
"""

PLUGIN_MODULE = '''
"""A third-party backend: ONNX Runtime with its default session options."""

import numpy as np

from smolql.backends.base import Backend, Capabilities, Session
from smolql.models.export import INPUT_NAME, onnx_path


class PlainSession(Session):
    def __init__(self, spec, precision):
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(onnx_path(spec)), providers=["CPUExecutionProvider"]
        )
        self.backend, self.precision = "ort_plain", precision

    def run(self, batch):
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch)})[0]


class PlainOrt(Backend):
    name = "ort_plain"
    requires = ("onnxruntime",)
    install = "onnxruntime"

    def capabilities(self):
        return Capabilities(devices=("cpu",), precisions=("fp32",))

    def open(self, spec, precision, threads, batch_size):
        return PlainSession(spec, precision)


def register(register_backend):
    register_backend(PlainOrt())
'''

USE_IT = """
import sys, smolql
con = smolql.connect(sys.argv[1])
con.create_catalog("photos", sys.argv[2], renditions=(), progress=False)
from smolql.backends.registry import backends
print("registered:", sorted(backends()))
sql = "SELECT file, classify(image).label AS label FROM photos ORDER BY file"
con.sql("SET smolql.backend = 'onnxruntime'")
reference = con.sql(sql).to_pylist()
con.sql("SET smolql.backend = 'ort_plain'")
con.sql("SET smolql.cache = off")
plan = con.sql("EXPLAIN " + sql)["plan"].to_pylist()
print("plan:", [line for line in plan if "plan:" in line][0])
print("same labels:", con.sql(sql).to_pylist() == reference)
"""


def test_a_backend_plugin_is_found_and_used_from_sql(tmp_path, small_dir):
    source = tmp_path / "plugin"
    source.mkdir()
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (source / "smolql_example_backend.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    proc = subprocess.run(
        [sys.executable, "-c", USE_IT, str(tmp_path / "p.duckdb"), str(small_dir)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "'ort_plain'" in out and "'onnxruntime'" in out  # the built-ins came in the same way
    assert "ort_plain/fp32" in out
    assert "same labels: True" in out


def test_without_the_plugin_the_backend_is_unknown(con):
    from smolql.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend 'ort_plain'"):
        con.sql("SET smolql.backend = 'ort_plain'")
