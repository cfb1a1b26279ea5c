"""The Jupyter magic: ``%load_ext smolql``, then ``%smolql`` / ``%%smolql``.

    %smolql --db photos.duckdb            connect (or: %smolql con, an existing connection)
    %%smolql result <<                    run the cell, keep the last result in ``result``
    %%smolql -o result                    the same
    SELECT file, image, classify(image) FROM photos WHERE width > :min_width

``:name`` takes ``name`` from the notebook's namespace and binds it as a parameter. Results
show as HTML tables with thumbnails (from the catalog's renditions, at most
``SmolQLMagics.thumbnail_px`` pixels) and ``classify`` results as ``label (score)``.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import shlex
import sys

import pyarrow as pa
from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope
from PIL import Image
from sqlglot.tokens import Tokenizer, TokenType
from traitlets import Int

from smolql.connection import Connection, connect
from smolql.errors import Error
from smolql.output import IMAGE_KEYS, cell_text
from smolql.sources import read
from smolql.sql.parse import split
from smolql.storage.images import smallest_rendition

CLASS_KEYS = {"label", "score", "class_index"}


class Result:
    """A query result in a notebook: HTML with thumbnails, plain text elsewhere."""

    def __init__(self, table: pa.Table, con: Connection, limit: int, thumb: int) -> None:
        self.arrow, self.con, self.limit, self.thumb = table, con, limit, thumb

    def __len__(self) -> int:
        return self.arrow.num_rows

    def to_pandas(self):
        return self.arrow.to_pandas()

    def __repr__(self) -> str:
        if self.arrow.column_names == ["plan"]:
            return "\n".join(self.arrow.column("plan").to_pylist())
        from smolql.output import format_table

        return format_table(self.arrow, max_rows=self.limit)

    def _repr_html_(self) -> str:
        if self.arrow.column_names == ["plan"]:
            return f"<pre>{html.escape(repr(self))}</pre>"
        rows = self.arrow.slice(0, self.limit).to_pylist()
        head = "".join(f"<th>{html.escape(n)}</th>" for n in self.arrow.column_names)
        body = "".join(
            "<tr>" + "".join(f"<td>{self._cell(v)}</td>" for v in row.values()) + "</tr>"
            for row in rows
        )
        more = self.arrow.num_rows - len(rows)
        tail = f"<p>… {more} more rows</p>" if more > 0 else ""
        return f'<table class="smolql">\n<tr>{head}</tr>\n{body}\n</table>{tail}'

    def _cell(self, value) -> str:
        if isinstance(value, dict) and value.keys() >= IMAGE_KEYS:
            return self._thumbnail(value)
        if isinstance(value, dict) and value.keys() >= CLASS_KEYS:
            return html.escape(_label(value))
        if (
            isinstance(value, list)
            and value
            and isinstance(value[0], dict)
            and value[0].keys() >= CLASS_KEYS
        ):
            return html.escape(", ".join(_label(v) for v in value))
        return html.escape(cell_text(value))

    def _thumbnail(self, image: dict) -> str:
        small = smallest_rendition(self.con.duckdb, image["catalog"], image["id"])
        try:
            source = small or io.BytesIO(read(image["path"])[0])
            with Image.open(source) as im:
                im.draft("RGB", (self.thumb, self.thumb))  # never decode a full original
                im = im.convert("RGB")
                im.thumbnail((self.thumb, self.thumb))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=80)
        except OSError:
            return html.escape(cell_text(image))
        data = base64.b64encode(buf.getvalue()).decode()
        alt = html.escape(f"{image['catalog']}#{image['id']}")
        return f'<img src="data:image/jpeg;base64,{data}" alt="{alt}" title="{alt}"/>'


def _label(value: dict) -> str:
    return f"{value['label']} ({value['score']:.2f})" if value.get("score") is not None else "NULL"


@magics_class
class SmolQLMagics(Magics):
    display_limit = Int(20, help="Rows shown in a result table.").tag(config=True)
    thumbnail_px = Int(96, help="Largest side of inline thumbnails, in pixels.").tag(config=True)

    def __init__(self, shell) -> None:
        super().__init__(shell)
        self.connection: Connection | None = None

    @needs_local_scope
    @line_cell_magic
    def smolql(self, line: str, cell: str | None = None, local_ns=None):
        """Run SQL on a SmolQL database; see the module docstring."""
        namespace = {**self.shell.user_ns, **(local_ns or {})}
        try:
            target, sql = self._options(line, cell, namespace)
            if not sql.strip():
                return None
            result = self._run(sql, namespace)
        except Error as e:
            context = getattr(e, "context", "")
            print(f"SmolQL error: {e}" + (f"\n{context}" if context else ""), file=sys.stderr)
            return None
        if target:
            self.shell.user_ns[target] = result
            return None
        return result

    def _options(self, line: str, cell: str | None, namespace: dict) -> tuple[str | None, str]:
        words = shlex.split(line, posix=True) if line.strip() else []
        target, rest = None, []
        i = 0
        while i < len(words):
            w = words[i]
            if w == "--db" and i + 1 < len(words):
                if self.connection is not None and self.connection.database != words[i + 1]:
                    self.connection = None
                self.connection = self.connection or connect(words[i + 1])
                i += 2
            elif w == "-o" and i + 1 < len(words):
                target, i = words[i + 1], i + 2
            elif i + 1 < len(words) and words[i + 1] == "<<":
                target, i = w, i + 2
            elif not rest and isinstance(namespace.get(w), Connection):
                self.connection, i = namespace[w], i + 1
            else:
                rest = words[i:]
                break
        sql = cell if cell is not None else line[line.find(rest[0]) :] if rest else ""
        if self.connection is None and sql.strip():
            self.connection = connect()
        return target, sql

    def _run(self, sql: str, namespace: dict) -> Result | None:
        table = None
        for statement in split(sql):
            names = _parameter_names(statement)
            params = {n: namespace[n] for n in names if n in namespace} or None
            table = self.connection.sql(statement, params)
        if table is None:
            return None
        return Result(table, self.connection, self.display_limit, self.thumbnail_px)


def _parameter_names(sql: str) -> set[str]:
    tokens = Tokenizer(dialect="duckdb").tokenize(sql)
    return {
        nxt.text
        for t, nxt in itertools.pairwise(tokens)
        if t.token_type == TokenType.COLON and nxt.start == t.end + 1
    }


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(SmolQLMagics)
