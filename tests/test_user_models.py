"""Bring your own model: an ONNX classifier stored in the database and planned like a
built-in. Two real models: EfficientNet-Lite0's real weights exported under a new name (with
its own input/output names, and once channels-last), and a small CNN trained here."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import real_jpegs

import smolql
from smolql.errors import InferenceError

torch = pytest.importorskip("torch", reason="exporting the test models needs torch")

SQL = "SELECT file, classify(image, '{}').label AS label FROM photos ORDER BY file"


def export(module, path: Path, shape: tuple[int, ...]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            torch.zeros(*shape),
            str(path),
            input_names=["input_1"],
            output_names=["scores"],
            dynamic_axes={"input_1": {0: "n"}, "scores": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> tuple[Path, Path, Path]:
    """EfficientNet-Lite0 (real weights) as ONNX, NCHW and NHWC, and its labels file."""
    from smolql.models.registry import get_model

    spec = get_model("efficientnet_lite0")
    folder = tmp_path_factory.mktemp("lite")
    module = spec.load()
    export(module, folder / "lite.onnx", (1, 3, 224, 224))

    class ChannelsLast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    export(ChannelsLast(module), folder / "lite_nhwc.onnx", (1, 224, 224, 3))
    (folder / "labels.txt").write_text("\n".join(spec.labels) + "\n")
    return folder / "lite.onnx", folder / "lite_nhwc.onnx", folder / "labels.txt"


@pytest.fixture
def con(tmp_path, small_dir):
    warnings.simplefilter("ignore")
    with smolql.connect(str(tmp_path / "u.duckdb"), backend="onnxruntime") as c:
        c.create_catalog("photos", str(small_dir), renditions=(), progress=False)
        yield c


def test_an_exported_builtin_under_a_new_name_gives_the_builtins_labels(con, lite):
    from smolql.models.registry import get_model

    onnx, nhwc, labels = lite
    t = get_model("efficientnet_lite0").transform
    same = {"input_size": 224, "resize": t.resize, "mean": t.mean, "std": t.std}
    con.add_model("mylite", onnx=str(onnx), labels=str(labels), **same)
    con.add_model("mylite_nhwc", onnx=str(nhwc), labels=str(labels), layout="NHWC", **same)
    reference = con.sql(SQL.format("efficientnet_lite0")).to_pylist()
    assert con.sql(SQL.format("mylite")).to_pylist() == reference
    assert con.sql(SQL.format("mylite_nhwc")).to_pylist() == reference
    listed = {r["name"]: r for r in con.list_models().to_pylist()}
    assert (
        listed["mylite"]["kind"] == "onnx (this database)" and listed["mylite"]["classes"] == 1000
    )
    plan = "\n".join(con.sql("EXPLAIN " + SQL.format("mylite"))["plan"].to_pylist())
    assert "mylite on original, onnxruntime/fp32" in plan
    con.sql("SET smolql.backend = 'torch'")  # its torch form (onnx2torch)
    con.sql("SET smolql.cache = off")
    assert con.sql(SQL.format("mylite")).to_pylist() == reference


def test_the_model_travels_with_the_database(con, lite, tmp_path):
    onnx, _, labels = lite
    con.add_model("portable", onnx=str(onnx), labels=str(labels), input_size=224)
    expected = con.sql(SQL.format("portable")).to_pylist()
    db = con.database
    con.close()
    moved = tmp_path / "elsewhere.duckdb"
    os.replace(db, moved)
    code = (
        "import sys, warnings, smolql; warnings.simplefilter('ignore');"
        "con = smolql.connect(sys.argv[1], backend='onnxruntime');"
        f"print(con.sql({SQL.format('portable')!r}).to_pylist())"
    )
    env = {**os.environ, "SMOLQL_CACHE": str(tmp_path / "fresh-cache")}  # no file of it there
    out = subprocess.run([sys.executable, "-c", code, str(moved)], capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(expected)


def test_bad_models_are_refused_with_clear_errors(con, lite, tmp_path):
    onnx, _, labels = lite
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(InferenceError, match=r"not an ONNX model.*junk.onnx"):
        con.add_model("junk", onnx=str(junk), labels=str(labels), input_size=224)
    short = tmp_path / "short.txt"
    short.write_text("\n".join(f"c{i}" for i in range(999)))
    with pytest.raises(InferenceError, match="gives 1000 scores but the labels file has 999"):
        con.add_model("short", onnx=str(onnx), labels=str(short), input_size=224)
    with pytest.raises(InferenceError, match=r"input is \?x3x224x224 but --input-size 192"):
        con.add_model("small", onnx=str(onnx), labels=str(labels), input_size=192)
    with pytest.raises(InferenceError, match="built-in model's name"):
        con.add_model("efficientnet_lite0", onnx=str(onnx), labels=str(labels), input_size=224)
    assert "junk" not in {r["name"] for r in con.list_models().to_pylist()}


def two_photographs(tmp_path: Path) -> tuple[list[Path], Path]:
    files = real_jpegs(2)
    folder = tmp_path / "two"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    return files, folder


def train_to_tell_apart(net, files: list[Path]) -> None:
    """Train ``net`` (64 px input, mean 0.45 / std 0.25) on random crops of two photographs
    to tell them apart."""
    from PIL import Image

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pixels = []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        pixels.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)

    def crops(n: int) -> tuple:
        xs, ys = [], []
        for _ in range(n):
            k = int(rng.integers(2))
            p = pixels[k]
            s = int(rng.integers(96, min(p.shape[1:]) + 1))
            y, x = (int(rng.integers(0, d - s + 1)) for d in p.shape[1:])
            crop = torch.nn.functional.interpolate(p[None, :, y : y + s, x : x + s], size=(64, 64))
            xs.append((crop[0] - 0.45) / 0.25)
            ys.append(k)
        return torch.stack(xs), torch.tensor(ys)

    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        x, y = crops(32)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


TINY_NET = """
import torch

def small_cnn(num_classes):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, num_classes),
    )
"""


def test_a_small_model_trained_here_is_added_from_the_cli_and_classifies(tmp_path, capsys):
    """Two photographs, a tiny CNN trained on random crops of each to tell them apart."""
    from smolql.cli import main

    files, folder = two_photographs(tmp_path)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 2),
    )  # fmt: skip
    train_to_tell_apart(net, files)
    export(net, tmp_path / "tiny.onnx", (1, 3, 64, 64))
    (tmp_path / "tiny.txt").write_text(f"{files[0].stem}\n{files[1].stem}\n")
    db = str(tmp_path / "t.duckdb")
    assert main(["catalog", "create", "two", str(folder), "--no-renditions", "--db", db]) == 0
    args = ["model", "add", "tiny", "--onnx", str(tmp_path / "tiny.onnx"), "--labels",
            str(tmp_path / "tiny.txt"), "--input-size", "64", "--resize", "64",
            "--mean", "0.45,0.45,0.45", "--std", "0.25,0.25,0.25", "--db", db]  # fmt: skip
    assert main(args) == 0
    assert main(["model", "list", "--db", db]) == 0
    assert "tiny" in capsys.readouterr().out
    with smolql.connect(db) as con:
        got = con.sql("SELECT file, classify(image, 'tiny').label AS label FROM two").to_pylist()
    assert {r["file"]: r["label"] for r in got} == {f.name: f.stem for f in files}


@pytest.mark.slow
def test_a_user_model_is_profiled_and_quantised_like_a_builtin(lite, tmp_path):
    """``smolql profile`` plans it (DCT scales, engines, int8 calibrated on the catalog), and
    ``SET smolql.precision = 'int8'`` then runs the quantised engine."""
    from conftest import MANIFEST, have_sample, sample_files

    from smolql.cli import main
    from smolql.models.registry import get_model

    if not have_sample():
        pytest.skip("needs the labelled ImageNet sample")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in sample_files()[:24]:
        (folder / f.name).write_bytes(f.read_bytes())
    db = str(tmp_path / "p.duckdb")
    assert main(["catalog", "create", "c", str(folder), "--no-renditions", "--labels",
                 str(MANIFEST), "--db", db]) == 0  # fmt: skip
    onnx, _, labels = lite
    t = get_model("efficientnet_lite0").transform
    with smolql.connect(db) as con:
        con.add_model("mine", onnx=str(onnx), labels=str(labels), input_size=224,
                      resize=t.resize, mean=t.mean, std=t.std)  # fmt: skip
    args = ["profile", "c", "--model", "mine", "--precision", "fp32", "--precision", "int8",
            "--sample", "24", "--repeats", "1", "--no-smaller-inputs", "--db", db,
            "--plot", str(tmp_path / "p.png")]  # fmt: skip
    assert main(args) == 0
    with smolql.connect(db) as con:
        plans = con.duckdb.execute(
            "SELECT DISTINCT precision FROM smolql.plan_profiles WHERE model = 'mine'"
        ).fetchall()
        assert {p for (p,) in plans} == {"fp32", "int8"}
        con.sql("SET smolql.precision = 'int8'")
        q = "SELECT classify(image, 'mine').label AS l FROM c"
        plan = "\n".join(con.sql("EXPLAIN " + q)["plan"].to_pylist())
        assert "int8" in plan
        assert all(con.sql(q)["l"].to_pylist())


def test_a_torchvision_architecture_with_your_weights_is_stored_and_used(con, tmp_path, capsys):
    import torchvision

    from smolql.cli import main

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    (tmp_path / "three.txt").write_text("red\ngreen\nblue\n")
    db = con.database
    con.close()
    args = ["model", "add", "r18", "--torchvision", "resnet18", "--weights",
            str(tmp_path / "r18.pt"), "--labels", str(tmp_path / "three.txt"),
            "--input-size", "112", "--db", db]  # fmt: skip
    assert main(args) == 0
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    bad = [*args[:8], str(tmp_path / "four.txt"), *args[9:]]
    bad[2] = "r18b"
    assert main(bad) == 1
    assert "the weights do not fit torchvision resnet18 with 4 classes" in capsys.readouterr().err
    with smolql.connect(db) as c:
        got = c.sql(SQL.format("r18"))["label"].to_pylist()
        assert got and set(got) <= {"red", "green", "blue"}
        listed = {r["name"]: r for r in c.list_models().to_pylist()}
        assert listed["r18"]["kind"] == "torchvision (this database)" and "r18b" not in listed
        torch_out = c.sql("SET smolql.backend = 'torch'; " + SQL.format("r18"))
        assert torch_out["label"].to_pylist() == got  # a torch module: every backend runs it


def test_your_own_architecture_by_python_entry_point(tmp_path, monkeypatch, capsys):
    """``--python MODULE:FACTORY`` with a state dict: stored (name and weights) in the
    database, run by every backend; a process that cannot import the factory gets an error
    that names it."""
    from smolql.cli import main

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mynets.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    import mynets

    files, folder = two_photographs(tmp_path)
    net = mynets.small_cnn(num_classes=2)
    train_to_tell_apart(net, files)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    (tmp_path / "two.txt").write_text(f"{files[0].stem}\n{files[1].stem}\n")
    db = str(tmp_path / "p.duckdb")
    assert main(["catalog", "create", "two", str(folder), "--no-renditions", "--db", db]) == 0
    args = ["model", "add", "mine", "--python", "mynets:small_cnn", "--weights",
            str(tmp_path / "w.pt"), "--labels", str(tmp_path / "two.txt"), "--input-size", "64",
            "--resize", "64", "--mean", "0.45,0.45,0.45", "--std", "0.25,0.25,0.25",
            "--db", db]  # fmt: skip
    assert main(args) == 0
    assert main([*args[:4], "mynets:nope", *args[5:]]) == 1
    assert "cannot import the model's factory mynets:nope" in capsys.readouterr().err
    want = {f.name: f.stem for f in files}
    sql = "SELECT file, classify(image, 'mine').label AS label FROM two"
    for backend in ("torch", "onnxruntime"):
        with smolql.connect(db, backend=backend) as con:
            assert {r["file"]: r["label"] for r in con.sql(sql).to_pylist()} == want
            kinds = {r["name"]: r["kind"] for r in con.list_models().to_pylist()}
            assert kinds["mine"] == "python (this database)"
    code = (
        "import smolql, sys\n"
        "with smolql.connect(sys.argv[1]) as con:\n"
        f"    print(dict((r['file'], r['label']) for r in con.sql({sql!r}).to_pylist()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "code"),
           "SMOLQL_CACHE": str(tmp_path / "fresh-cache")}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, db], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == want  # a fresh process, a fresh cache folder: from the database
    env.pop("PYTHONPATH")  # the cached answers still come; a computation needs the code
    nocache = code.replace(
        "with smolql.connect(sys.argv[1])", "with smolql.connect(sys.argv[1], cache='off')"
    )
    out = subprocess.run([sys.executable, "-c", nocache, db], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode != 0 and "mynets:small_cnn" in out.stderr


def test_an_onnx_model_gets_smaller_inputs_and_low_resolution_training(tmp_path):
    """A user's ONNX model has a torch form (onnx2torch): the profile tries a smaller input
    (exported from that form), and ``train`` fine-tunes it for a rendition; the fine-tuned
    model runs its new weights, not the stored graph, on ONNX Runtime and on torch."""
    pytest.importorskip("onnx2torch", reason="the torch form of ONNX models needs onnx2torch")
    from smolql.models.registry import get_model
    from smolql.planner.space import smaller_inputs

    files, folder = two_photographs(tmp_path)
    c = torch.nn.Conv2d
    net = torch.nn.Sequential(  # four stride-2 stages: a 1/16 feature map to distil at
        c(3, 8, 3, 2, 1), torch.nn.ReLU(), c(8, 16, 3, 2, 1), torch.nn.ReLU(),
        c(16, 16, 3, 2, 1), torch.nn.ReLU(), c(16, 16, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 2),
    )  # fmt: skip
    train_to_tell_apart(net, files)
    export(net, tmp_path / "tiny.onnx", (1, 3, 64, 64))
    want = {f.name: f.stem for f in files}
    rendition = "48:jpeg:90"
    with smolql.connect(str(tmp_path / "o.duckdb"), backend="onnxruntime") as con:
        con.create_catalog("two", str(folder), renditions=[rendition], progress=False)
        con.add_model("tiny", onnx=str(tmp_path / "tiny.onnx"), labels=list(want.values()),
                      input_size=64, resize=64, mean=(0.45,) * 3, std=(0.25,) * 3)  # fmt: skip
        assert smaller_inputs(get_model("tiny")) == [48]
        con.profile("two", models=["tiny"], sample=2, precisions=("fp32",), repeats=1)
        sizes = con.duckdb.execute(
            "SELECT DISTINCT input_size, accuracy FROM smolql.plan_profiles"
            " WHERE model = 'tiny' AND source = 'original' AND scale = 1"
        ).fetchall()
        assert {s for s, _ in sizes} == {0, 48}, sizes
        sources = con.duckdb.execute(
            "SELECT DISTINCT source FROM smolql.plan_profiles WHERE model = 'tiny'"
        ).fetchall()
        assert {s for (s,) in sources} == {"original", rendition}  # renditions planned too
        outcome = con.train("two", model="tiny", rendition=rendition, epochs=2)
        trained = get_model(f"tiny@{rendition}")
        assert trained.onnx is None and trained.weights != get_model("tiny").weights
        sql = f"SELECT file, classify(image, 'tiny@{rendition}').label AS label FROM two"
        con.sql("SET smolql.cache = off")
        on_ort = {r["file"]: r["label"] for r in con.sql(sql).to_pylist()}
        con.sql("SET smolql.backend = 'torch'")
        assert {r["file"]: r["label"] for r in con.sql(sql).to_pylist()} == on_ort
        assert set(on_ort) == set(want) and set(on_ort.values()) <= set(want.values())
        assert outcome is not None
