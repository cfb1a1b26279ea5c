"""Build a catalog of the demo photographs and ask it a few questions from Python.

python examples/catalog_basics.py [DB]
"""

from __future__ import annotations

import sys
import tempfile

import smolql
from smolql.demo import load_definition, write_demo_images

db = sys.argv[1] if len(sys.argv) > 1 else ":memory:"
folder = tempfile.mkdtemp(prefix="smolql-example-")
write_demo_images(load_definition("demo"), folder)

with smolql.connect(db) as con:
    print(con.create_catalog("photos", folder, progress=False).line("photos"))
    by_format = con.sql("SELECT format, count(*) AS n FROM photos GROUP BY ALL ORDER BY n DESC")
    print(by_format.to_pylist())
    wide = con.sql("SELECT file, width FROM photos WHERE width > ? ORDER BY width DESC", [600])
    print(wide.to_pylist())
