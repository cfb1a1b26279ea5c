"""Boxes from annotation files: a COCO-format JSON, or a CSV/Parquet/JSON Lines table of
``file, x, y, w, h, label``, attached to a catalog as a boxes table joined by image.

Attached boxes are stored in ``smolql."boxes_<catalog>"`` and seen through a view
``<catalog>_boxes`` (or a name of the user's) with one row per box: ``image_id`` (the catalog's
``id``), ``file``, ``box_id``, ``x, y, w, h`` (pixels, top-left origin, as COCO writes them),
``label`` and, from COCO, ``category_id``, ``area`` and ``iscrowd``. Images are matched on their
file name; a box whose file is not in the catalog keeps ``image_id`` NULL (the view shows it, so
nothing is lost silently). Then

    SELECT b.label, classify(crop(c.image, b.x, b.y, b.w, b.h)).label
    FROM photos c JOIN photos_boxes b ON b.image_id = c.id

classifies every annotated object, each crop pushed into partial JPEG decoding.
"""

from __future__ import annotations

import json
import os
import re

import duckdb
import pyarrow as pa

from smolql.errors import CatalogInputError
from smolql.storage.catalogs import replace_boxes

TABLE_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".jsonl": "read_json"}
BOX_COLUMNS = ("x", "y", "w", "h")
FILE_KEYS = ("file", "file_name", "filename", "path")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_boxes(path: str) -> pa.Table:
    """The boxes of an annotation file: ``file, box_id, x, y, w, h, label`` and extras."""
    if not os.path.isfile(path):
        raise CatalogInputError("annotation file not found", file=path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return _coco(path)
    if ext not in TABLE_READERS:
        raise CatalogInputError(
            "annotations must be COCO JSON (.json) or a .csv/.parquet/.jsonl table", file=path
        )
    quoted = "'" + path.replace("'", "''") + "'"
    try:
        table = (
            duckdb.connect().sql(f"SELECT * FROM {TABLE_READERS[ext]}({quoted})").to_arrow_table()
        )
    except duckdb.Error as e:
        raise CatalogInputError(f"cannot read the annotations: {e}", file=path) from e
    names = {n.lower(): n for n in table.column_names}
    key = next((names[k] for k in FILE_KEYS if k in names), None)
    missing = [c for c in (*BOX_COLUMNS, "label") if c not in names]
    if key is None or missing:
        raise CatalogInputError(
            f"an annotation table needs columns file, x, y, w, h, label (missing:"
            f" {', '.join(([] if key else ['file']) + missing)})",
            file=path,
        )
    files = [None if f is None else _reference(str(f)) for f in table[key].to_pylist()]
    out = {"file": pa.array(files, pa.string()), "box_id": pa.array(range(1, len(files) + 1))}
    try:
        for c in BOX_COLUMNS:
            out[c] = table[names[c]].cast(pa.float64())
        out["label"] = table[names["label"]].cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise CatalogInputError(f"box columns x, y, w, h must be numbers: {e}", file=path) from e
    used = {key, *(names[c] for c in (*BOX_COLUMNS, "label"))}
    for c in table.column_names:
        if c not in used and c.lower() not in out:
            out[c] = table[c]
    return pa.table(out)


def _reference(name: str) -> str:
    """An annotation's image reference as given (a file name, a relative path with folders, an
    absolute path or a URI), with ``\\`` as ``/`` and no leading ``./``."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _coco(path: str) -> pa.Table:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        images = {im["id"]: _reference(str(im["file_name"])) for im in doc["images"]}
        names = {c["id"]: c["name"] for c in doc.get("categories", [])}
        rows = []
        for i, a in enumerate(doc["annotations"]):
            x, y, w, h = (float(v) for v in a["bbox"])
            rows.append(
                {
                    "file": images.get(a["image_id"]),
                    "box_id": int(a.get("id", i + 1)),
                    "x": x,
                    "y": y,
                    "w": w,
                    "h": h,
                    "label": names.get(a.get("category_id")),
                    "category_id": a.get("category_id"),
                    "area": float(a.get("area", w * h)),
                    "iscrowd": int(a.get("iscrowd", 0)),
                }
            )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CatalogInputError(
            f"not a COCO annotation file ({type(e).__name__}: {e})", file=path
        ) from e
    schema = pa.schema(
        [("file", pa.string()), ("box_id", pa.int64()), ("x", pa.float64()), ("y", pa.float64()),
         ("w", pa.float64()), ("h", pa.float64()), ("label", pa.string()),
         ("category_id", pa.int64()), ("area", pa.float64()), ("iscrowd", pa.int32())]
    )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)


def attach(
    con: duckdb.DuckDBPyConnection, catalog: str, boxes: pa.Table, name: str | None = None
) -> str:
    """Store ``boxes`` for ``catalog`` and (re)create its boxes view; return the view's name."""
    view = name or f"{catalog}_boxes"
    if not NAME.match(view):
        raise CatalogInputError(f"boxes view name {view!r}: use letters, digits and _")
    replace_boxes(con, catalog, boxes, view)
    return view
