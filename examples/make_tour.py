"""Write examples/smolql_tour.ipynb (run it with Jupyter; tests/test_magic.py executes it)."""

from pathlib import Path

import nbformat as nbf

CELLS = [
    (
        "markdown",
        "# SmolQL in a notebook\nA catalog of real photographs, classification in SQL, "
        "EXPLAIN, and result tables with thumbnails.",
    ),
    ("code", "%load_ext smolql"),
    (
        "code",
        "import tempfile\nimport smolql\nfrom smolql.demo import load_definition, "
        "write_demo_images\n\nfolder = tempfile.mkdtemp(prefix='smolql-tour-')\n"
        "write_demo_images(load_definition('demo'), folder + '/photos')\n"
        "con = smolql.connect(folder + '/tour.duckdb')\n"
        "print(con.create_catalog('photos', folder + '/photos', progress=False).line('photos'))",
    ),
    ("code", "%smolql con"),
    ("code", "%%smolql\nSELECT file, image, format, width, height FROM photos ORDER BY id"),
    ("code", "min_width = 500"),
    (
        "code",
        "%%smolql result <<\nSET smolql.backend = 'onnxruntime';\n"
        "SELECT file, image, classify(image) AS top, classify_topk(image, 3) AS top3\n"
        "FROM photos WHERE width >= :min_width ORDER BY classify(image).score DESC",
    ),
    ("code", "print(len(result), 'rows captured')\nresult.to_pandas()[['file']].head()"),
    ("code", "result"),
    (
        "code",
        "%smolql -o plan EXPLAIN SELECT file FROM photos WHERE format = 'jpeg' AND "
        "classify(image).label = 'espresso'",
    ),
    ("code", "plan"),
    ("code", "%smolql SELECT classify(image, 'efficientnet_lite9').label FROM photos"),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbf.v4.new_markdown_cell(src) if kind == "markdown" else nbf.v4.new_code_cell(src)
        for kind, src in CELLS
    ]
    nbf.write(nb, Path(__file__).with_name("smolql_tour.ipynb"))


if __name__ == "__main__":
    main()
