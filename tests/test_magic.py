"""The %%smolql magic in a real Jupyter kernel: the example notebook runs top to bottom."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow  # the fast tier is pytest -m 'not slow'

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smolql_tour.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    from nbclient import NotebookClient

    nb = nbformat.read(EXAMPLE, as_version=4)
    workdir = tmp_path_factory.mktemp("nb")
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return nb


def outputs(nb, index: int) -> list[dict]:
    return nb.cells[index].get("outputs", [])


def html_of(nb, index: int) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs(nb, index))


def test_result_tables_show_thumbnails_not_full_images(executed):
    table = html_of(executed, 4)
    assert table.count("<img") == 14 and "data:image/jpeg;base64," in table
    for src in table.split('src="')[1:]:
        assert len(src.split('"')[0]) < 12_000  # a ~96 px thumbnail, never a whole photograph


def test_classify_reads_as_label_and_score_and_capture_works(executed):
    printed = "".join(o.get("text", "") for o in outputs(executed, 7))
    assert "rows captured" in printed and not printed.startswith("0 ")
    frame = "".join(o.get("data", {}).get("text/html", "") for o in outputs(executed, 7))
    assert "coffee.jpg" in frame or "retina.jpg" in frame


def test_captured_result_displays_thumbnails_and_labels(executed):
    shown = html_of(executed, 8)
    assert "<img" in shown and "espresso (0." in shown


def test_explain_is_readable_and_captured(executed):
    shown = html_of(executed, 10)
    assert shown.startswith("<pre>") and "pre-filter (DuckDB)" in shown


def test_error_cell_shows_one_short_message(executed):
    err = "".join(o.get("text", "") for o in outputs(executed, 11) if o.get("name") == "stderr")
    assert "did you mean 'efficientnet_lite2'" in err and "(line 1, column" in err
    assert "Traceback" not in err and all(
        o["output_type"] != "error" for o in outputs(executed, 10)
    )


def test_html_rendering_is_saved_for_readers(executed):
    page = Path(__file__).resolve().parents[1] / "examples" / "result_table.html"
    if os.environ.get("SMOLQL_WRITE_EXAMPLE_HTML"):
        page.write_text(html_of(executed, 8))
    assert "<img" in page.read_text() and "(0." in page.read_text()


def test_line_magic_connects_limits_rows_and_falls_back_to_text(tmp_path, small_dir):
    from IPython.core.interactiveshell import InteractiveShell

    import smolql
    from smolql.magic import SmolQLMagics

    db = str(tmp_path / "m.duckdb")
    with smolql.connect(db) as con:
        con.create_catalog("photos", str(small_dir), progress=False)
    shell = InteractiveShell.instance()
    magics = SmolQLMagics(shell)
    magics.display_limit = 5
    assert magics.smolql(f"--db {db}") is None and magics.connection.database == db
    result = magics.smolql("", "SELECT id, image FROM photos ORDER BY id")
    page = result._repr_html_()
    assert page.count("<img") == 5 and "… 7 more rows" in page
    assert "image(photos#1)" in repr(result) and "12 rows, 7 not shown" in repr(result)
    shell.user_ns["top"] = 2
    assert len(magics.smolql("SELECT id FROM photos WHERE id <= :top")) == 2
    magics.connection.close()
