"""The ``smolql`` command line: catalogs, queries, an interactive shell and the demo."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from smolql.config import PROFILE_SAMPLE, SETTINGS, default_db_path
from smolql.connection import Connection, connect
from smolql.errors import CatalogInputError, SmolQLError
from smolql.ingest.definition import DEFAULT_RENDITIONS
from smolql.output import FORMATS, format_table, write_result
from smolql.storage.images import catalog_listing

MAX_REASONS = 10


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="database file (default $SMOLQL_DB or ./smolql.duckdb)",
    )
    common.add_argument(
        "--read-only",
        action="store_true",
        default=argparse.SUPPRESS,
        help="open the database read-only: several processes may read it at once while none"
        " writes (automatic when the file is not writable)",
    )
    common.add_argument(
        "--executor",
        default=argparse.SUPPRESS,
        help="where UDF stages run: local (default, or $SMOLQL_EXECUTOR) or ray",
    )
    parser = argparse.ArgumentParser(
        prog="smolql", description="SQL over image collections.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    cat = sub.add_parser("catalog", help="create and manage image catalogs", parents=[common])
    csub = cat.add_subparsers(dest="action", required=True)
    create = csub.add_parser("create", help="register a folder or glob of images", parents=[common])
    create.add_argument("name", nargs="?", help="the catalog's name (or from --from FILE)")
    create.add_argument(
        "source",
        nargs="?",
        help="a directory (searched recursively), a quoted glob, a manifest (.parquet, .csv,"
        " .jsonl) or an object-storage prefix (s3://bucket/prefix/)",
    )
    create.add_argument(
        "--rendition",
        action="append",
        metavar="SPEC",
        help=f"SHORTSIDE:FORMAT[:QUALITY], repeatable (default {' '.join(DEFAULT_RENDITIONS)})",
    )
    create.add_argument("--no-renditions", action="store_true", help="store no renditions")
    create.add_argument(
        "--from",
        dest="file",
        metavar="TOML",
        help="a catalog file: name, source, renditions, labels, boxes (see catalogs/demo.toml)",
    )
    create.add_argument("--labels", metavar="CSV", help="CSV joined on its file column")
    create.add_argument("--max-pixels", type=int, help=SETTINGS["max_image_pixels"].help)
    boxes = csub.add_parser(
        "boxes", help="attach boxes from a COCO JSON or a CSV/Parquet table", parents=[common]
    )
    boxes.add_argument("name", help="the catalog")
    boxes.add_argument("annotations", help="COCO JSON, or a table of file, x, y, w, h, label")
    boxes.add_argument("--as", dest="view", help="the boxes view's name (default NAME_boxes)")
    csub.add_parser("list", help="list catalogs", parents=[common])
    for action, text in (
        ("show", "describe a catalog, its renditions and skipped files"),
        ("refresh", "pick up added, changed and deleted files"),
        ("drop", "remove a catalog (source images are kept)"),
    ):
        csub.add_parser(action, help=text, parents=[common]).add_argument("name")

    mod = sub.add_parser("model", help="add and list classification models", parents=[common])
    msub = mod.add_subparsers(dest="action", required=True)
    madd = msub.add_parser("add", help="store your classifier in the database",
                           parents=[common])  # fmt: skip
    madd.add_argument("name")
    what = madd.add_mutually_exclusive_group(required=True)
    what.add_argument("--onnx", metavar="FILE", help="the model (ONNX)")
    what.add_argument("--torchvision", metavar="ARCH", help="a torchvision architecture")
    what.add_argument(
        "--python",
        metavar="MODULE:FACTORY",
        help="your architecture: FACTORY(num_classes=N) returns a torch module",
    )
    madd.add_argument("--weights", metavar="FILE",
                      help="its state dict (with --torchvision or --python)")  # fmt: skip
    madd.add_argument("--labels", required=True, metavar="FILE", help="one label per line")
    madd.add_argument("--input-size", type=int, required=True, help="square input, pixels")
    madd.add_argument("--resize", type=int, help="short side before the centre crop")
    madd.add_argument("--mean", help="per-channel mean, e.g. 0.485,0.456,0.406 (default)")
    madd.add_argument("--std", help="per-channel std, e.g. 0.229,0.224,0.225 (default)")
    madd.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"))
    msub.add_parser("list", help="list the models classify can use", parents=[common])

    query = sub.add_parser("query", help="run SQL and print the result", parents=[common])
    query.add_argument("sql")
    query.add_argument("--format", choices=FORMATS, default="table")
    query.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    prof = sub.add_parser(
        "profile",
        help="measure accuracy and throughput of every plan; fit and check the cost model",
        parents=[common],
    )
    prof.add_argument("catalog")
    prof.add_argument(
        "--model", action="append", metavar="M", help="repeatable (default: all with weights)"
    )
    prof.add_argument("--sample", type=int, default=PROFILE_SAMPLE, help="images to sample")
    prof.add_argument(
        "--precision",
        action="append",
        choices=("fp32", "bf16", "fp16", "int8"),
        help="repeatable (default fp32, bf16 or fp16 where this machine offers it, int8)",
    )
    prof.add_argument("--no-smaller-inputs", action="store_true", help="native input size only")
    prof.add_argument("--labels", metavar="COLUMN", help="label column (default class_index)")
    prof.add_argument(
        "--repeats", type=int, default=3, help="end-to-end runs per plan (median kept)"
    )
    prof.add_argument(
        "--plot", metavar="PNG", help="accuracy-vs-throughput plot (default CATALOG-plans.png)"
    )

    cal = sub.add_parser(
        "calibrate",
        help="measure this machine's inference engines once (kept in the user cache)",
        parents=[common],
    )
    cal.add_argument(
        "--model", action="append", metavar="M", help="repeatable (default: the default model)"
    )
    cal.add_argument(
        "--catalog", help="measure on this catalog's images (default: scikit-image's photographs)"
    )

    tr = sub.add_parser(
        "train",
        help="fine-tune a model for a rendition (label-free distillation)",
        parents=[common],
    )
    tr.add_argument("catalog")
    tr.add_argument("--model", required=True)
    tr.add_argument("--rendition", required=True, metavar="SPEC", help="e.g. 161:jpeg:75")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--where", metavar="SQL", help="train on the images matching this filter")
    tr.add_argument("--limit", type=int, help="at most this many images (in id order)")

    sub.add_parser("shell", help="interactive SQL shell with history", parents=[common])
    sub.add_parser("demo", help="build the demo catalog and run example queries", parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _HANDLERS[(args.command, getattr(args, "action", None))]
    warnings.showwarning = show_warning
    db = getattr(args, "db", None) or default_db_path()
    new = db != ":memory:" and not os.path.exists(db)
    try:
        chosen = getattr(args, "executor", None)
        options = {"executor": chosen} if chosen else {}
        if getattr(args, "read_only", False):
            options["read_only"] = True
        with connect(db, **options) as con:
            if new and args.command in ("query", "shell"):
                print(f"note: {db} did not exist: created a new, empty database", file=sys.stderr)
            return handler(con, args)
    except SmolQLError as e:
        print_error(e)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line for the user, the traceback on request
        if os.environ.get("SMOLQL_DEBUG"):
            raise
        print(
            f"Internal error: {type(e).__name__}: {e} (a bug; SMOLQL_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the internal source line Python would show."""
    print(f"Warning: {message}", file=file or sys.stderr)


def print_error(e: SmolQLError) -> None:
    print(f"Error: {e}", file=sys.stderr)
    context = getattr(e, "context", "")
    if context:
        print(context, file=sys.stderr)


def _create(con: Connection, args: argparse.Namespace) -> int:
    if args.file:
        if args.name or args.source:
            raise CatalogInputError("give either NAME SOURCE or --from FILE, not both")
        from smolql.ingest.declare import load

        name = load(args.file).name
        _print_summary(name, con.create_catalog_from(args.file))
        return 0
    if not (args.name and args.source):
        raise CatalogInputError("catalog create needs NAME SOURCE (or --from FILE)")
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


def _boxes(con: Connection, args: argparse.Namespace) -> int:
    view = con.attach_boxes(args.name, args.annotations, name=args.view)
    n, matched = con.duckdb.execute(f'SELECT count(*), count(image_id) FROM "{view}"').fetchone()
    print(f"{view}: {n} boxes, {matched} on images of {args.name}")
    return 0


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise CatalogInputError(f"--{what} takes three numbers separated by commas, not {text!r}")
    return values


def _model_add(con: Connection, args: argparse.Namespace) -> int:
    con.add_model(
        args.name,
        onnx=args.onnx,
        torchvision=args.torchvision,
        python=args.python,
        weights=args.weights,
        labels=args.labels,
        input_size=args.input_size,
        resize=args.resize,
        mean=_floats(args.mean, "mean"),
        std=_floats(args.std, "std"),
        layout=args.layout,
    )
    print(f"model {args.name} added: classify(image, '{args.name}')")
    return 0


def _model_list(con: Connection, args: argparse.Namespace) -> int:
    print(format_table(con.list_models()))
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
    print(format_table(catalog_listing(con.duckdb)))
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
    if args.output and os.path.isdir(args.output):
        print(f"Error: --output {args.output} is a directory: name a file", file=sys.stderr)
        return 2
    try:
        write_result(con.sql(args.sql), args.format, args.output)
    except OSError as e:
        print(f"Error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ValueError as e:
        if isinstance(e, SmolQLError):
            raise
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _profile(con: Connection, args: argparse.Namespace) -> int:
    from smolql.profile.chart import as_table, plot
    from smolql.profile.run import MAX_ERROR

    report = con.profile(
        args.catalog,
        models=args.model,
        sample=args.sample,
        precisions=tuple(args.precision) if args.precision else None,
        smaller_inputs=not args.no_smaller_inputs,
        labels=args.labels,
        repeats=args.repeats,
        say=_say,
    )
    print(format_table(as_table(report), max_cell=None))
    print(f"accuracy: {report.basis}; * = Pareto frontier; ref = reference plan")
    verdict = "ok" if report.max_error <= MAX_ERROR else "NOT within"
    print(
        f"cost model: largest throughput prediction error {100 * report.max_error:.1f}%"
        f" over {len(report.profiles)} plans ({verdict} {100 * MAX_ERROR:.0f}%);"
        f" {report.cost.describe_contention()} per image"
    )
    if report.describe_fetch():
        print(f"reads: {report.describe_fetch()}")
    path = plot(report, args.plot or f"{args.catalog}-plans.png")
    print(f"plot: {path}")
    if report.max_error > MAX_ERROR:  # the profile itself completed: a warning, not a failure
        print(
            f"Warning: the cost model misses one plan by {100 * report.max_error:.1f}% (bar"
            f" {100 * MAX_ERROR:.0f}%): the measurements are stored and used; more --repeats"
            " narrow a noisy machine's spread",
            file=sys.stderr,
        )
    return 0


def _calibrate(con: Connection, args: argparse.Namespace) -> int:
    chosen = con.calibrate(args.model, catalog=args.catalog, say=_say)
    for model, (backend, precision, batch, rate) in chosen.items():
        print(f"{model}: {backend}/{precision}, batch {batch}, {rate:.0f} images/s inference")
    return 0


def _train(con: Connection, args: argparse.Namespace) -> int:
    out = con.train(
        args.catalog,
        model=args.model,
        rendition=args.rendition,
        epochs=args.epochs,
        where=args.where,
        limit=args.limit,
        say=_say,
    )
    for path, reason in out.skipped[:MAX_REASONS]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"trained {out.model} on {out.images} images in {out.seconds:.0f} s"
        f" (distilled at {out.layer}; feature loss {out.losses[0]:.4f} -> {out.losses[-1]:.4f});"
        f" run `smolql profile {args.catalog}` to measure it"
    )
    return 0


def _shell(con: Connection, args: argparse.Namespace) -> int:
    from smolql.shell import run_shell

    return run_shell(con)


def _demo(con: Connection, args: argparse.Namespace) -> int:
    from smolql.demo import run_demo

    return run_demo(con)


_HANDLERS: dict[tuple[str, str | None], Callable[[Connection, argparse.Namespace], int]] = {
    ("catalog", "create"): _create,
    ("model", "add"): _model_add,
    ("model", "list"): _model_list,
    ("catalog", "boxes"): _boxes,
    ("catalog", "list"): _list,
    ("catalog", "show"): _show,
    ("catalog", "refresh"): _refresh,
    ("catalog", "drop"): _drop,
    ("query", None): _query,
    ("profile", None): _profile,
    ("calibrate", None): _calibrate,
    ("train", None): _train,
    ("shell", None): _shell,
    ("demo", None): _demo,
}

if __name__ == "__main__":
    sys.exit(main())
