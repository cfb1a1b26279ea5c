"""Low-resolution-aware training: real images, the real model, a short real training run.

The held-out accuracy recovery (250 training images, 250 others) takes minutes and is
measured by ``benchmarks/smol.py``; here the mechanics are checked on a few images.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import sample_files

import smolql
from smolql.imaging.decode import decode_other
from smolql.ingest.definition import RenditionSpec
from smolql.lowres.distill import Prefix, distillation_layer
from smolql.lowres.views import Box, load_pair
from smolql.models.registry import get_model

pytestmark = pytest.mark.slow  # the fast tier is pytest -m 'not slow'

BASE = "efficientnet_lite0"
RENDITION = "161:jpeg:75"
TRAINED = f"{BASE}@{RENDITION}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowres")
    folder = root / "images"
    folder.mkdir()
    for f in sample_files()[:20]:
        shutil.copy2(f, folder / f.name)
    db = str(root / "lowres.duckdb")
    con = smolql.connect(db)
    con.create_catalog("pics", str(folder), renditions=[RENDITION])
    # A file that breaks after ingest must be skipped and reported, not stop the training.
    broken = sorted(folder.iterdir())[3]
    broken.write_bytes(broken.read_bytes()[:2000])
    outcome = con.train("pics", model=BASE, rendition=RENDITION, epochs=2, limit=17)
    yield con, db, outcome, str(broken)
    if not con.closed:  # the last test closes it for another process
        con.close()


def test_the_degraded_twin_is_the_catalogs_rendition(tmp_path):
    """The student's input is degraded exactly as ingest makes the rendition."""
    src = sample_files()[7]
    with smolql.connect(str(tmp_path / "r.duckdb")) as con:
        con.create_catalog("one", str(src).replace(".JPEG", ".JP*G"), renditions=[RENDITION])
        (path,) = con.sql("SELECT path FROM smolql.renditions").column("path").to_pylist()
    with open(path, "rb") as f:
        stored = decode_other(f.read())
    pair = load_pair(str(src), RenditionSpec.parse(RENDITION), 512)
    assert np.array_equal(pair.degraded.permute(1, 2, 0).numpy(), stored)
    assert min(pair.original.shape[1:]) > min(pair.degraded.shape[1:]) == 161


def test_boxes_crop_both_views_identically():
    rng = np.random.default_rng(3)
    image = torch.arange(3 * 300 * 400, dtype=torch.float32).reshape(3, 300, 400)
    small = torch.nn.functional.interpolate(image[None], size=(150, 200), mode="bilinear")[0]
    for _ in range(20):
        box = Box.random(rng, 300 / 400)
        assert box.top >= 0 and box.top + box.height <= 1 + 1e-9
        assert box.left >= 0 and box.left + box.width <= 1 + 1e-9
        a, b = box.apply(image, 32), box.apply(small, 32)
        assert a.shape == b.shape == (3, 32, 32)
        # the same region of a smooth ramp: the two crops agree up to the resampling
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99


def test_distillation_layer_is_the_last_at_stride_16():
    module = get_model(BASE).load()
    assert distillation_layer(module, 224) == "_blocks.10"
    prefix = Prefix(module, "_blocks.10")
    try:
        assert prefix(torch.zeros(2, 3, 224, 224)).shape == (2, 112, 14, 14)
    finally:
        prefix.close()
    assert module(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)  # the hook is gone


def test_training_registers_a_model_stored_with_the_database(trained):
    con, db, outcome, broken = trained
    assert outcome.model == TRAINED
    assert outcome.images == 16 and [p for p, _ in outcome.skipped] == [broken]
    assert len(outcome.losses) == 2 and outcome.layer == "_blocks.10"
    (row,) = con.sql("SELECT * FROM smolql.trained_models").to_pylist()
    assert row["base"] == BASE and row["rendition"] == RENDITION and row["train_images"] == 16
    assert os.path.dirname(row["weights"]) == db + ".models"
    spec = get_model(TRAINED)
    assert spec.base == BASE and spec.weights == row["weights"]


def test_only_the_layers_before_the_distillation_point_change(trained):
    base = get_model(BASE).load().state_dict()
    tuned = get_model(TRAINED).load().state_dict()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert any(k.startswith("_conv_stem") for k in changed)
    assert any(k.startswith("_blocks.10.") for k in changed)
    assert not any(k.startswith(("_blocks.11.", "_conv_head", "_fc")) for k in changed)
    # batch-norm statistics are the teacher's
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)


def test_training_a_trained_model_again_is_refused(trained):
    con, *_ = trained
    with pytest.raises(smolql.Error, match="itself fine-tuned"):
        con.train("pics", model=TRAINED, rendition=RENDITION, epochs=1, limit=2)


def test_a_new_process_offers_the_trained_model_in_sql(trained):
    con, db, _, _ = trained
    con.close()  # free the database file for another process (the last test of the module)
    code = (
        "import smolql\n"
        f"con = smolql.connect({db!r})\n"
        f"rows = con.sql(\"SELECT classify(image, '{TRAINED}') AS c FROM pics"
        ' WHERE id <= 3").to_pylist()\n'
        "print(sorted({r['c']['model'] for r in rows}), len(rows))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"['{TRAINED}']", "3"]
