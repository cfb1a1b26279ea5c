"""Extension points (issue 14, point 5): a backend, a catalog source, a SQL function and an
executor from another package, found through the ``smolql.backends``, ``smolql.sources``,
``smolql.functions`` and ``smolql.executors`` entry-point groups exactly as the built-ins are,
and used from SQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile

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

[project.entry-points."smolql.sources"]
zip = "smolql_example_backend:register_source"

[project.entry-points."smolql.functions"]
label_of = "smolql_example_backend:register_function"

[project.entry-points."smolql.executors"]
serial = "smolql_example_backend:register_executor"
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


import os
import zipfile

from smolql.errors import CatalogInputError
from smolql.sources import Source


class ZipSource(Source):
    """Images inside a zip archive: ``zip:///path/archive.zip``; one image is
    ``zip:///path/archive.zip!member.jpg``."""

    name = "zip"

    def claims(self, location):
        return location.startswith("zip://")

    def _split(self, path):
        archive, _, member = path[len("zip://"):].partition("!")
        return archive, member

    def resolve(self, location):
        archive = os.path.abspath(self._split(location)[0])
        if not zipfile.is_zipfile(archive):
            raise CatalogInputError("not a zip archive", file=archive)
        return "zip://" + archive

    def list(self, location):
        archive = self._split(location)[0]
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png"))]
        return sorted(f"zip://{archive}!{n}" for n in names)

    def _member(self, z, path, member):
        try:
            return z.getinfo(member)
        except KeyError:
            raise FileNotFoundError(path) from None

    def _signature(self, archive, info):
        st = os.stat(archive)
        return (info.file_size, st.st_mtime_ns, info.CRC, st.st_ino)

    def stat(self, path):
        archive, member = self._split(path)
        with zipfile.ZipFile(archive) as z:
            return self._signature(archive, self._member(z, path, member))

    def read(self, path):
        archive, member = self._split(path)
        with zipfile.ZipFile(archive) as z:
            info = self._member(z, path, member)
            return z.read(info), self._signature(archive, info)


def register_source(register):
    register(ZipSource())


import pyarrow as pa

from smolql.sql.functions import Argument, SqlFunction


def register_function(register):
    """``label_of(image [, 'model'])``: just the best class's label, as a string."""
    register(
        SqlFunction(
            "label_of",
            (Argument("image", "image"), Argument("model", "model", optional=True)),
            "classification",
            pa.string(),
            lambda topk: topk[0]["label"],
        )
    )


from smolql.backends.registry import get_backend
from smolql.errors import DecodeError
from smolql.executor.base import RESULTS


class SerialExecutor:
    """One image at a time on one thread, no pipelining: the plan's engine and decode, run
    the plainest way (a reference for any other executor)."""

    name = "serial"
    ran = 0

    def run(self, plan, refs, *, k=1, progress=None):
        pre = plan.preprocessor()
        session = get_backend(plan.backend).open(plan.spec, plan.precision, 1, 1)
        try:
            for i, ref in enumerate(refs):
                slot = np.empty((1, *pre.output.shape), np.float32)
                try:
                    digest = pre.run(ref, slot[0])
                except DecodeError as e:
                    row = {"index": [i], "topk": [None], "error": [e.message], "digest": [None]}
                    yield pa.RecordBatch.from_pydict(row, schema=RESULTS)
                    continue
                logits = session.run(slot)[0].astype(np.float64)
                p = np.exp(logits - logits.max())
                p /= p.sum()
                best = np.argsort(-p)[:k]
                topk = [
                    {"class_index": int(c), "label": plan.spec.labels[c], "score": float(p[c])}
                    for c in best
                ]
                SerialExecutor.ran += 1
                row = {"index": [i], "topk": [topk], "error": [None], "digest": [digest]}
                yield pa.RecordBatch.from_pydict(row, schema=RESULTS)
        finally:
            session.close()


def register_executor(register):
    register(SerialExecutor())
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

con.sql("SET smolql.backend = 'onnxruntime'")
con.create_catalog("zipped", "zip://" + sys.argv[3], renditions=(), progress=False)
zipped = con.sql(sql.replace("photos", "zipped")).to_pylist()
by_name = {r["file"].split("!")[-1]: r["label"] for r in zipped}
print("zip source:", len(zipped), "images, same labels:",
      by_name == {r["file"]: r["label"] for r in reference})
print("zip path:", con.sql("SELECT path FROM zipped LIMIT 1").to_pylist()[0]["path"])

from smolql.sql.functions import functions
print("functions:", sorted(functions()))
labels = con.sql("SELECT file, label_of(image) AS label FROM photos ORDER BY file").to_pylist()
print("label_of:", labels == reference)

import smolql_example_backend as plugin
con.sql("SET smolql.executor = 'serial'")
serial = con.sql("SELECT file, classify(image).label AS label FROM photos ORDER BY file"
                 " /* fresh */").to_pylist()
print("serial executor:", plugin.SerialExecutor.ran, "images, same labels:", serial == reference)
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
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(small_dir.iterdir()):
            z.write(f, f.name)
    proc = subprocess.run(
        [sys.executable, "-c", USE_IT, str(tmp_path / "p.duckdb"), str(small_dir), str(archive)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "'ort_plain'" in out and "'onnxruntime'" in out  # the built-ins came in the same way
    assert "ort_plain/fp32" in out
    assert "same labels: True" in out
    assert f"zip source: {len(list(small_dir.iterdir()))} images, same labels: True" in out
    assert f"zip path: zip://{archive}!" in out
    assert "functions: ['classify', 'classify_topk', 'crop', 'label_of']" in out
    assert "label_of: True" in out
    n = len(list(small_dir.iterdir()))
    assert f"serial executor: {n} images, same labels: True" in out  # cache is off: all run


def test_without_the_plugin_its_names_are_unknown(con):
    from smolql.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend 'ort_plain'"):
        con.sql("SET smolql.backend = 'ort_plain'")
    with pytest.raises(ConfigError, match="unknown executor 'serial'"):
        con.sql("SET smolql.executor = 'serial'")
