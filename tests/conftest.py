"""Shared fixtures: the 500 real ImageNet JPEGs beside the checkout, and image makers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import smolql

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SMOLQL_SAMPLE", REPO.parent / "shared/data/imagenet-sample"))
MANIFEST = SAMPLE / "manifest.csv"


def sample_files(n: int | None = None) -> list[Path]:
    files = sorted(SAMPLE.glob("*.JPEG"))
    if len(files) < 500:
        raise RuntimeError(f"the shared ImageNet sample is missing at {SAMPLE}")
    return files[:n] if n else files


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    """A folder holding copies of 12 real sample JPEGs."""
    folder = tmp_path / "images"
    folder.mkdir()
    for f in sample_files(12):
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
