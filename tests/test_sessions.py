"""Engine sessions are kept open between queries (smolql.executor.sessions): a repeated query
does not build its engine again, a calibrated engine is kept only until it is calibrated again,
and a forked child does not inherit its parent's engines."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from smolql.backends.openvino_cpu import OpenVinoBackend
from smolql.executor import sessions
from smolql.models.registry import get_model

SQL = "SELECT classify(image).label AS l FROM photos ORDER BY id"


@pytest.fixture
def photos(con, small_dir):
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    con.sql("SET smolql.cache = off")
    con.sql("SET smolql.backend = 'openvino'")
    sessions.close_all()
    yield con
    sessions.close_all()


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The precisions of the OpenVINO sessions opened (the real ones)."""
    seen: list[str] = []
    real = OpenVinoBackend.open

    def counting(self, spec, precision, threads, batch_size):
        seen.append(precision)
        return real(self, spec, precision, threads, batch_size)

    monkeypatch.setattr(OpenVinoBackend, "open", counting)
    return seen


def test_a_repeated_query_reuses_its_engine(photos, opened):
    first = photos.sql(SQL)["l"].to_pylist()
    assert photos.sql(SQL)["l"].to_pylist() == first
    assert photos.sql(SQL)["l"].to_pylist() == first
    assert opened == ["fp32"]


def test_a_calibrated_engine_is_kept_until_it_is_calibrated_again(
    photos, opened, tmp_path, monkeypatch
):
    if "int8" not in OpenVinoBackend().capabilities().precisions:
        pytest.skip("openvino offers no int8 here (it needs nncf)")
    monkeypatch.setenv("SMOLQL_CACHE", str(tmp_path / "cache"))
    photos.sql("SET smolql.precision = 'int8'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = photos.sql(SQL)["l"].to_pylist()
        assert photos.sql(SQL)["l"].to_pylist() == first
        assert opened == ["int8"]  # calibrated once, opened once
        spec = get_model(photos.settings.model)
        size = spec.input_size
        other = np.random.default_rng(0).random((8, 3, size, size), dtype=np.float32)
        stamp = OpenVinoBackend().engine_stamp(spec, "int8")
        OpenVinoBackend().calibrate(spec, "int8", other)  # another engine replaces the file
        assert OpenVinoBackend().engine_stamp(spec, "int8") not in ("", stamp)
        photos.sql(SQL)
    assert opened == ["int8", "int8"]  # the new engine, not the pooled old one


def test_a_fork_closes_idle_engines_first(photos, opened):
    first = photos.sql(SQL)["l"].to_pylist()
    assert sessions._idle  # the parent keeps one
    pid = os.fork()  # a child forked with an engine alive could hang in its thread pool
    if pid == 0:  # the child: exit status 0 only if it inherited nothing
        os._exit(0 if not sessions._idle else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not sessions._idle
    assert photos.sql(SQL)["l"].to_pylist() == first
    assert opened == ["fp32", "fp32"]  # the parent opens its engine again
