"""Shared fixtures: the 500 real ImageNet JPEGs beside the checkout (tests that need them skip
with one clear reason where they are missing), and photographs every installation has."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import smolql

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SMOLQL_SAMPLE", REPO.parent / "shared/data/imagenet-sample"))
MANIFEST = SAMPLE / "manifest.csv"


SAMPLE_MISSING = (
    f"needs the labelled ImageNet sample, which is not at {SAMPLE} "
    "(set SMOLQL_SAMPLE to a folder with its 500 JPEGs and manifest.csv)"
)


def have_sample() -> bool:
    return len(list(SAMPLE.glob("*.JPEG"))) >= 500 and MANIFEST.exists()


def sample_files(n: int | None = None) -> list[Path]:
    """The sample's JPEGs, sorted; a test that needs them skips where they are missing."""
    if not have_sample():
        pytest.skip(SAMPLE_MISSING)
    files = sorted(SAMPLE.glob("*.JPEG"))
    return files[:n] if n else files


# Colour photographs first (tests pick images by position, as they would from the sample).
PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
               "retina", "ihc", "color", "motorcycle_right", "camera", "coins")  # fmt: skip


@functools.cache
def _made_photographs() -> tuple[Path, ...]:
    """JPEGs made once per test run from the photographs in scikit-image's wheel."""
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    folder = Path(tempfile.mkdtemp(prefix="smolql-test-photographs-"))
    atexit.register(shutil.rmtree, folder, True)
    out = []
    for name in PHOTOGRAPHS:
        with Image.open(next(data.glob(f"{name}.*"))) as im:
            target = folder / f"{name}.jpg"
            im.convert("RGB").save(target, quality=90)
        out.append(target)
    return tuple(out)


def real_jpegs(n: int | None = None) -> list[Path]:
    """Real JPEG photographs for tests that need no labels: the sample's, or, on a machine
    without it, 12 made from the photographs every installation has."""
    files = sample_files() if have_sample() else list(_made_photographs())
    return files[:n] if n else files


def copied(files: list[Path], folder: Path) -> Path:
    """``folder`` (made) holding copies of ``files`` (same bytes and times)."""
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def photographs() -> list[Path]:
    """12 real photographs (see :func:`real_jpegs`)."""
    return real_jpegs(12)


@pytest.fixture
def small_dir(tmp_path: Path, photographs: list[Path]) -> Path:
    """A folder holding copies of 12 real photographs (see ``photographs``)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for f in photographs:
        shutil.copy2(f, folder / f.name)
    return folder


@pytest.fixture
def con(tmp_path: Path):
    connection = smolql.connect(str(tmp_path / "test.duckdb"))
    yield connection
    if not connection.closed:  # a test may close it (a second close is an error)
        connection.close()


@pytest.fixture(scope="session")
def imagenet(tmp_path_factory: pytest.TempPathFactory):
    """One connection with the whole sample ingested (three default renditions, labels)."""
    sample_files()  # skips where the sample is missing
    db = tmp_path_factory.mktemp("imagenet") / "imagenet.duckdb"
    connection = smolql.connect(str(db))
    summary = connection.create_catalog(
        "imagenet", str(SAMPLE), labels=str(MANIFEST), progress=False
    )
    yield connection, summary
    connection.close()


@pytest.fixture(scope="session")
def lite0(tmp_path_factory: pytest.TempPathFactory):
    from classifier import Lite0

    return Lite0(tmp_path_factory.mktemp("lite0"))
