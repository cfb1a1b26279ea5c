"""``smolql demo``: build a catalog of real photographs and query it.

The photographs ship inside scikit-image's wheel, so the demo works offline.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources

import cv2
import numpy as np
import pyarrow as pa
from PIL import Image

from smolql.connection import Connection
from smolql.ingest.declare import CatalogFile, load
from smolql.output import format_table
from smolql.storage.schema import MEMORY


def definition_file(name: str = "demo") -> str:
    """A catalog file shipped in ``smolql.catalogs`` (``catalogs/`` in the repo)."""
    return str(resources.files("smolql.catalogs").joinpath(f"{name}.toml"))


def load_definition(name: str = "demo") -> CatalogFile:
    """A shipped catalog file, read by the loader ``smolql catalog create --from`` uses."""
    return load(definition_file(name))


def write_demo_images(definition: CatalogFile, folder: str) -> None:
    """Copy scikit-image's photographs into ``folder``, in the formats the definition names."""
    import skimage

    data_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    os.makedirs(folder, exist_ok=True)
    for source, fmt in definition.images.items():
        stem = os.path.splitext(source)[0]
        target = os.path.join(folder, f"{stem}.{ {'jpeg': 'jpg', 'tiff': 'tif'}.get(fmt, fmt) }")
        if os.path.exists(target):
            continue
        with Image.open(os.path.join(data_dir, source)) as im:
            pixels = np.asarray(im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode))
        if fmt == "jpeg":
            Image.fromarray(pixels).save(target, quality=92)
        else:
            bgr = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            cv2.imwrite(target, bgr)


def run_demo(con: Connection) -> int:
    definition = load_definition("demo")
    name = definition.name
    if con.database == MEMORY:
        folder = tempfile.mkdtemp(prefix="smolql-demo-")
    else:
        folder = os.path.abspath(con.database) + ".demo-images"
    write_demo_images(definition, folder)
    print(f"Demo catalog {name!r}: {definition.description}, in {folder}")
    summary = con.create_catalog_from(definition_file("demo"), source=folder)
    print(summary.line(name))
    for q in definition.queries:
        print(f"\n-- {q['title']}\n{q['sql'].strip()};")
        print(format_table(con.sql(q["sql"])))
    show_classification(con, name)
    return 0


def show_classification(con: Connection, catalog: str) -> None:
    """Classify the demo photographs with the default model and the measured backend."""
    from smolql.models.registry import get_model
    from smolql.planner import engines as choose

    model = con.settings.model
    if con.settings.backend == "auto" and choose.stored_choice(get_model(model)) is None:
        print(
            "\n(calibrating: measuring this machine's inference engines once, as"
            " `smolql calibrate` does; every database then uses the choice)"
        )
        con.calibrate([model], catalog=catalog)
    result = con.classify(catalog)
    files = dict(con.duckdb.execute(f'SELECT id, file FROM "{catalog}"').fetchall())
    rows = sorted(
        zip(
            result["id"].to_pylist(),
            result["label"].to_pylist(),
            result["score"].to_pylist(),
            strict=True,
        ),
        key=lambda r: -(r[2] or 0),
    )
    table = pa.table(
        {
            "file": [files[i] for i, _, _ in rows],
            "label": [label for _, label, _ in rows],
            "score": [None if s is None else round(s, 4) for _, _, s in rows],
        }
    )
    print(f"\n-- Classification with {model}")
    print(format_table(table))
    chosen = choose.stored_choice(get_model(model))
    if chosen is not None and con.settings.backend == "auto":
        print(
            f"engine measured on this machine: {chosen.backend}/{chosen.precision},"
            f" batch {chosen.batch_size}, {chosen.images_per_s:.0f} images/s inference"
        )
