"""The ``smolql`` command line: catalogs, queries, an interactive shell and the demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from smolql.catalog.spec import DEFAULT_RENDITIONS
from smolql.config import SETTINGS
from smolql.connection import Connection, connect
from smolql.errors import SmolQLError
from smolql.output import FORMATS, format_table, write_result

MAX_REASONS = 10


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="database file (default $SMOLQL_DB or ./smolql.duckdb)",
    )
    parser = argparse.ArgumentParser(
        prog="smolql", description="SQL over image collections.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    cat = sub.add_parser("catalog", help="create and manage image catalogs", parents=[common])
    csub = cat.add_subparsers(dest="action", required=True)
    create = csub.add_parser("create", help="register a folder or glob of images", parents=[common])
    create.add_argument("name")
    create.add_argument("source", help="a directory (searched recursively) or a quoted glob")
    create.add_argument(
        "--rendition",
        action="append",
        metavar="SPEC",
        help=f"SHORTSIDE:FORMAT[:QUALITY], repeatable (default {' '.join(DEFAULT_RENDITIONS)})",
    )
    create.add_argument("--no-renditions", action="store_true", help="store no renditions")
    create.add_argument("--labels", metavar="CSV", help="CSV joined on its file column")
    create.add_argument("--max-pixels", type=int, help=SETTINGS["max_image_pixels"].help)
    csub.add_parser("list", help="list catalogs", parents=[common])
    for action, text in (
        ("show", "describe a catalog, its renditions and skipped files"),
        ("refresh", "pick up added, changed and deleted files"),
        ("drop", "remove a catalog (source images are kept)"),
    ):
        csub.add_parser(action, help=text, parents=[common]).add_argument("name")

    query = sub.add_parser("query", help="run SQL and print the result", parents=[common])
    query.add_argument("sql")
    query.add_argument("--format", choices=FORMATS, default="table")
    query.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    sub.add_parser("shell", help="interactive SQL shell with history", parents=[common])
    sub.add_parser("demo", help="build the demo catalog and run example queries", parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _HANDLERS[(args.command, getattr(args, "action", None))]
    try:
        with connect(getattr(args, "db", None)) as con:
            return handler(con, args)
    except SmolQLError as e:
        print_error(e)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def print_error(e: SmolQLError) -> None:
    print(f"Error: {e}", file=sys.stderr)
    context = getattr(e, "context", "")
    if context:
        print(context, file=sys.stderr)


def _create(con: Connection, args: argparse.Namespace) -> int:
    renditions = () if args.no_renditions else tuple(args.rendition or DEFAULT_RENDITIONS)
    summary = con.create_catalog(
        args.name,
        args.source,
        renditions=renditions,
        labels=args.labels,
        max_pixels=args.max_pixels,
    )
    _print_summary(args.name, summary)
    return 0


def _refresh(con: Connection, args: argparse.Namespace) -> int:
    _print_summary(args.name, con.refresh_catalog(args.name))
    return 0


def _print_summary(name: str, summary) -> None:
    for path, reason in summary.reasons[:MAX_REASONS]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(summary.reasons) > MAX_REASONS:
        print(f"... and {len(summary.reasons) - MAX_REASONS} more", file=sys.stderr)
    print(summary.line(name))


def _list(con: Connection, args: argparse.Namespace) -> int:
    print(
        format_table(
            con.sql(
                "SELECT c.name, c.status, count(i.id) AS images, c.source, c.renditions"
                " FROM smolql.catalogs c LEFT JOIN smolql.images i ON i.catalog = c.name"
                " GROUP BY ALL ORDER BY c.name"
            )
        )
    )
    return 0


def _show(con: Connection, args: argparse.Namespace) -> int:
    info = con.describe_catalog(args.name)
    for key in ("name", "status", "source", "labels", "images", "bytes", "created", "updated"):
        print(f"{key:>10}: {info[key]}")
    for r in info["renditions"]:
        print(f"{'rendition':>10}: {r['spec']}  {r['files']} files, {r['bytes']:,} bytes")
    print(f"{'skipped':>10}: {len(info['errors'])} (table smolql.errors)")
    for e in info["errors"]:
        print(f"            {e['path']}: {e['reason']}")
    return 0


def _drop(con: Connection, args: argparse.Namespace) -> int:
    con.drop_catalog(args.name)
    print(f"dropped catalog {args.name}")
    return 0


def _query(con: Connection, args: argparse.Namespace) -> int:
    try:
        write_result(con.sql(args.sql), args.format, args.output)
    except ValueError as e:
        if isinstance(e, SmolQLError):
            raise
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


def _shell(con: Connection, args: argparse.Namespace) -> int:
    from smolql.shell import run_shell

    return run_shell(con)


def _demo(con: Connection, args: argparse.Namespace) -> int:
    from smolql.demo import run_demo

    return run_demo(con)


_HANDLERS: dict[tuple[str, str | None], Callable[[Connection, argparse.Namespace], int]] = {
    ("catalog", "create"): _create,
    ("catalog", "list"): _list,
    ("catalog", "show"): _show,
    ("catalog", "refresh"): _refresh,
    ("catalog", "drop"): _drop,
    ("query", None): _query,
    ("shell", None): _shell,
    ("demo", None): _demo,
}

if __name__ == "__main__":
    sys.exit(main())
