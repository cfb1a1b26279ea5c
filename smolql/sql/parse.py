"""SQL text -> statements: which are SmolQL's (UDF calls, ``SET smolql.*``, ``EXPLAIN``) and
which go to DuckDB untouched."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError as GlotParseError
from sqlglot.tokens import Tokenizer, TokenType

from smolql.errors import ParseError
from smolql.sql.functions import functions

_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALYZE\s+)?(.*)$", re.IGNORECASE | re.DOTALL)
_SETTING = re.compile(r"^\s*(SET|RESET)\s+smolql\.", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    text: str
    kind: str  # "duckdb", "query" (has UDFs), "set", "reset", "explain", "explain_analyze"


def uses_smolql(sql: str) -> bool:
    """True if the text calls a registered SmolQL function or sets a SmolQL setting (a cheap
    token scan)."""
    if _SETTING.match(sql):
        return True
    explain = _EXPLAIN.match(sql)
    if explain:  # the tokenizer reads EXPLAIN's argument as one opaque string
        sql = explain.group(2)
    try:
        tokens = Tokenizer(dialect="duckdb").tokenize(sql)
    except Exception:
        return False
    names = functions()
    return any(
        t.token_type in (TokenType.VAR, TokenType.IDENTIFIER) and t.text.lower() in names
        for t in tokens
    )


def split(sql: str) -> list[str]:
    """Statements of a script, by sqlglot's tokenizer (semicolons inside strings are safe)."""
    tokens = Tokenizer(dialect="duckdb").tokenize(sql)
    parts, start = [], 0
    for t in tokens:
        if t.token_type == TokenType.SEMICOLON:
            parts.append(sql[start : t.start])
            start = t.end + 1
    parts.append(sql[start:])
    return [p for p in (s.strip() for s in parts) if p]


def classify_statement(text: str) -> Statement:
    m = _EXPLAIN.match(text)
    if m and uses_smolql(m.group(2)):
        kind = "explain_analyze" if m.group(1) else "explain"
        return Statement(m.group(2), kind)
    if _SETTING.match(text):
        return Statement(text, text.split()[0].lower())
    if uses_smolql(text):
        return Statement(text, "query")
    return Statement(text, "duckdb")


def parse_one(sql: str) -> exp.Expression:
    """Parse one statement (DuckDB dialect); syntax errors carry line and column."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except GlotParseError as e:
        first = e.errors[0] if e.errors else {}
        err = ParseError(
            f"syntax error: {first.get('description', str(e))}",
            line=first.get("line"),
            column=first.get("col"),
        )
        line = sql.splitlines()[(first.get("line") or 1) - 1] if sql else ""
        err.context = f"  {line}\n  {' ' * max(0, (first.get('col') or 1) - 1)}^"
        raise err from e
    except (ValueError, AttributeError, TypeError, KeyError, IndexError, RecursionError) as e:
        # sqlglot itself tripping over malformed input (a bug of its own, not a traceback
        # for our users): still a syntax error
        raise ParseError(
            f"syntax error: the statement cannot be parsed ({type(e).__name__})"
        ) from e
    if tree is None:
        raise ParseError("empty statement")
    return tree
