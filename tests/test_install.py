"""A non-editable install carries the package, the C extension, built-in UDFs and definitions."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # the fast tier is pytest -m 'not slow'


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("smolql-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "smolql/udfs/__init__.py" in names
    assert "smolql/catalogs/demo.toml" in names
    assert any(n.startswith("smolql/_jpeg") and n.endswith(".so") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
    subpackages = {
        str(init.parent.relative_to(REPO)) for init in (REPO / "smolql").rglob("__init__.py")
    }
    for package in subpackages:  # every subpackage ships, not only those listed by hand
        assert f"{package}/__init__.py" in names, package

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import smolql, smolql.udfs, smolql._jpeg; from smolql.demo import load_definition;"
        "print(smolql.__file__); print(load_definition().name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    ).stdout.split()
    assert out == [str(site / "smolql" / "__init__.py"), "demo"]


def test_in_memory_database_works_and_cleans_up(small_dir):
    import smolql

    con = smolql.connect(":memory:")
    assert con.create_catalog("m", str(small_dir), progress=False).images == 12
    folder = con.renditions.path
    assert os.path.isdir(folder)
    con.close()
    assert not os.path.exists(folder)
