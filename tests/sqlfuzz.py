"""A seeded SQL fuzzer for SmolQL: mutations of reference queries run through ``con.sql``.

Every statement must either answer or fail with one of SmolQL's PEP 249 errors carrying a
message; anything else (a Python internal exception such as KeyError or TypeError, a raw DuckDB
exception, a crash of the process) is a finding. Mutations: dropped, duplicated, swapped and
replaced tokens; random literals (huge numbers, negatives, zero, NULL, unicode); wrong types,
NULLs and nested calls in every UDF argument; UDF calls in JOIN, HAVING, window and LATERAL
positions (among the references).

Run as a process (a segfault or abort is then a non-zero exit, not a dead test runner):

    python tests/sqlfuzz.py DB SEED COUNT LOG

writes one JSON line per finding to LOG and, before each statement, the statement to
``LOG.last`` (so that a crash names what caused it).
"""

from __future__ import annotations

import json
import random
import sys
import warnings
from collections.abc import Iterator

REFERENCES = (
    "SELECT path, classify(image).label FROM photos",
    "SELECT classify(image).label AS l, count(*) AS n FROM photos GROUP BY 1 ORDER BY 2 DESC",
    "SELECT file FROM photos WHERE classify(image).score > 0.5 AND width > 100",
    "SELECT classify_topk(image, 3) AS t FROM photos LIMIT 2",
    "SELECT classify(crop(image, 10, 10, 100, 100)).label FROM photos",
    "SELECT p.file, classify(p.image, 'efficientnet_lite0').label FROM photos p ORDER BY 1",
    "SELECT file FROM photos ORDER BY classify(image).score DESC LIMIT 1",
    "SELECT count(*) FROM photos WHERE classify(image).label = 'tench'",
    "SELECT a.file FROM photos a JOIN photos b"
    " ON classify(a.image).label = classify(b.image).label",
    "SELECT classify(image).label, max(width) FROM photos GROUP BY 1 HAVING count(*) >= 1",
    "SELECT file, rank() OVER (ORDER BY classify(image).score) AS r FROM photos",
    "SELECT file, t.l FROM photos, LATERAL (SELECT classify(image).label AS l) t",
    "WITH c AS (SELECT image FROM photos) SELECT classify(image).label FROM c",
    "SELECT classify(image).label FROM photos UNION ALL SELECT 'x'",
    "SELECT classify(image).class_index + 1 AS i FROM photos WHERE id IN (1, 2)",
    "SELECT file FROM photos WHERE classify(crop(crop(image, 0, 0, 200, 200), 5, 5, 50, 50))"
    ".score > 0.1",
    "SELECT classify(image) FROM photos WHERE classify(image).label LIKE '%a%' LIMIT 3",
)
LITERALS = (
    "NULL", "0", "-1", "1", "2.5", "-0.0", "1e308", "-1e308", "99999999999999999999999",
    "9223372036854775807", "'x'", "''", "'☃ ünï 文字'", "'\\u0000'", "TRUE", "[1, 2]",
    "{'a': 1}", "CAST(NULL AS INTEGER)", "'NaN'::DOUBLE", "'inf'::DOUBLE", "interval 1 day",
)  # fmt: skip
ARGUMENTS = (
    *LITERALS, "image", "path", "file", "width", "id", "classify(image)", "classify(image).label",
    "crop(image, 1, 1, 2, 2)", "classify_topk(image, 2)", "struct_pack(a := 1)",
    "struct_pack(catalog := 'photos', id := 1, path := 'nope.jpg', hash := 'x')",
    "struct_pack(catalog := NULL, id := NULL, path := NULL, hash := NULL)", "NULL::VARCHAR",
)  # fmt: skip
TOKENS = (
    *LITERALS, "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "JOIN", "ON", "(",
    ")", ",", ".", "*", "classify", "classify_topk", "crop", "image", "photos", "AND", "OR", "NOT",
    "=", "<", ">", "HAVING", "OVER", "LATERAL", "UNION", "AS", "label", "score", ";",
)  # fmt: skip
CALLS = ("classify", "classify_topk", "crop")


def statements(seed: int, count: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        sql = rng.choice(REFERENCES)
        for _ in range(rng.randint(1, 3)):
            sql = rng.choice(MUTATIONS)(sql, rng)
        yield sql


def _tokens(sql: str) -> list[str]:
    from sqlglot.tokens import Tokenizer

    try:
        return [sql[t.start : t.end + 1] for t in Tokenizer().tokenize(sql)]
    except Exception:
        return sql.split()


def _token_edit(sql: str, rng: random.Random) -> str:
    toks = _tokens(sql)
    if len(toks) < 2:
        return sql
    i, j = rng.randrange(len(toks)), rng.randrange(len(toks))
    what = rng.randrange(4)
    if what == 0:
        del toks[i]
    elif what == 1:
        toks.insert(i, toks[i])
    elif what == 2:
        toks[i], toks[j] = toks[j], toks[i]
    else:
        toks[i] = rng.choice(TOKENS)
    return " ".join(toks)


def _literal(sql: str, rng: random.Random) -> str:
    toks = _tokens(sql)
    spots = [i for i, t in enumerate(toks) if t[:1].isdigit() or t.startswith("'")]
    if not spots:
        return sql
    toks[rng.choice(spots)] = rng.choice(LITERALS)
    return " ".join(toks)


def _argument(sql: str, rng: random.Random) -> str:
    """Replace one argument of one UDF call (found with sqlglot), or add or drop one."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:
        return sql
    calls = [n for n in tree.find_all(exp.Anonymous) if n.name.lower() in CALLS and n.expressions]
    if not calls:
        return sql
    call = rng.choice(calls)
    args = list(call.expressions)
    new = sqlglot.parse_one(rng.choice(ARGUMENTS), read="duckdb")
    what = rng.randrange(4)
    if what == 0 and len(args) > 1:
        args.pop(rng.randrange(len(args)))
    elif what == 1:
        args.insert(rng.randrange(len(args) + 1), new)
    else:
        args[rng.randrange(len(args))] = new
    call.set("expressions", args)
    return tree.sql(dialect="duckdb")


def _nest(sql: str, rng: random.Random) -> str:
    """A UDF call inside another's argument, or wrapped in an aggregate or a CASE."""
    wrap = rng.choice(
        (
            "classify(crop(image, 0, 0, 64, 64))",
            "classify(classify(image))",
            "min(classify(image).score)",
            "CASE WHEN classify(image).score > 0.5 THEN classify(image).label END",
            "classify_topk(image, classify(image).class_index)",
            "classify(image, classify(image).label)",
        )
    )
    return sql.replace("classify(image)", wrap, 1) if "classify(image)" in sql else sql


MUTATIONS = (_token_edit, _token_edit, _literal, _argument, _argument, _nest)


def main() -> int:
    db, seed, count, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    warnings.simplefilter("ignore")
    import smolql

    findings = 0
    with smolql.connect(db) as con, open(log, "w") as out:
        for n, sql in enumerate(statements(seed, count)):
            with open(log + ".last", "w") as last:
                last.write(f"{n}\t{sql}\n")
            try:
                con.sql(sql)
            except smolql.Error as e:
                if not str(e).strip():
                    out.write(json.dumps({"n": n, "sql": sql, "error": "empty message"}) + "\n")
                    findings += 1
            except Exception as e:  # the finding: not a PEP 249 error of SmolQL
                what = f"{type(e).__module__}.{type(e).__name__}: {str(e)[:300]}"
                out.write(json.dumps({"n": n, "sql": sql, "error": what}) + "\n")
                out.flush()
                findings += 1
    print(f"{count} statements, {findings} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
