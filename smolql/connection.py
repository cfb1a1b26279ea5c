"""``smolql.connect``: a connection to a SmolQL database and its catalogs."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import duckdb
import pyarrow as pa

from smolql import changes, errors
from smolql.config import PROFILE_SAMPLE, Settings, default_db_path, worker_count
from smolql.dbapi import Cursor
from smolql.ingest import manage
from smolql.ingest.definition import DEFAULT_RENDITIONS
from smolql.ingest.ingest import IngestSummary
from smolql.storage.schema import MEMORY, RenditionRoot, close_database, open_database, writable
from smolql.storage.user_models import user_models

EXECUTOR_ENV = "SMOLQL_EXECUTOR"  # the default executor of new connections (e.g. "ray")


def _writes(method: Callable) -> Callable:
    """A method that changes the database: statements planned before are planned again."""

    @functools.wraps(method)
    def wrapper(self: Connection, *args: Any, **kwargs: Any) -> Any:
        changes.bump()
        try:
            return method(self, *args, **kwargs)
        finally:
            changes.bump()

    return wrapper


class Connection:
    """An open SmolQL database, and a PEP 249 connection.

    >>> con = connect(":memory:")
    >>> con.sql("SELECT 42 AS answer").to_pylist()
    [{'answer': 42}]
    >>> con.close()
    """

    # PEP 249 optional extension: the exception classes as connection attributes.
    Warning = errors.Warning
    Error = errors.Error
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(
        self, database: str | None = None, *, read_only: bool | None = None, **settings: Any
    ) -> None:
        self.database = database or default_db_path()
        if "executor" not in settings and os.environ.get(EXECUTOR_ENV):
            settings["executor"] = os.environ[EXECUTOR_ENV]
        self.settings = Settings(**settings)
        # read_only None: read-only exactly when this process may not write the file
        if read_only is None:
            read_only = self.database != ":memory:" and not writable(self.database)
        self.read_only = bool(read_only)
        self.duckdb = open_database(self.database, self.read_only)
        from smolql.executor.prepared import Plans

        # statements planned, with their stage tables
        self._plans = Plans(None if self.database == MEMORY else self.database)
        self.renditions = RenditionRoot(self.database)
        self.closed = False
        # One statement at a time per connection: threads that share it take turns (PEP 249
        # threadsafety 1 does not require sharing, but it must never corrupt or crash).
        self._lock = threading.RLock()
        from smolql.lowres.trained import register_stored

        register_stored(self.duckdb)
        if user_models(self.duckdb):  # only then load the model machinery at connect
            from smolql.models import user

            user.register_stored(self.duckdb)

    # -- PEP 249 -----------------------------------------------------------------------------

    def cursor(self) -> Cursor:
        self._check()
        return Cursor(self)

    def commit(self) -> None:
        """End an explicit transaction (``BEGIN``); DuckDB autocommits otherwise."""
        self._check()
        self._end_transaction("COMMIT")

    def rollback(self) -> None:
        self._check()
        self._end_transaction("ROLLBACK")

    def _end_transaction(self, verb: str) -> None:
        # No transaction active: nothing to end.
        with contextlib.suppress(duckdb.TransactionException):
            self.duckdb.execute(verb)

    def _check(self) -> None:
        if self.closed:
            raise errors.InterfaceError("connection is closed")

    def _writable(self, what: str) -> None:
        """Refuse, clearly, to change a database opened read-only."""
        self._check()
        if self.read_only:
            raise errors.CatalogError(
                f"cannot {what}: the database is open read-only (read_only=True, or this"
                " process may not write the file); queries still work, their results are not"
                " cached",
                file=self.database,
            )

    def _run(self, operation: str, parameters) -> pa.Table:
        """Run for a DB-API cursor, on the shared connection (one transaction for all)."""
        from smolql.execute import run_script

        self._check()
        with self._lock:
            return run_script(self.duckdb, self.settings, operation, parameters, self._plans)

    @_writes
    def create_catalog(
        self,
        name: str,
        source: str,
        *,
        renditions: Sequence[str] = DEFAULT_RENDITIONS,
        labels: str | None = None,
        max_pixels: int | None = None,
        progress: bool | None = None,
    ) -> IngestSummary:
        """Register a folder (recursive) or glob of images as catalog ``name`` and ingest it."""
        self._writable("create a catalog")
        definition = manage.CatalogDef(
            name,
            source,
            tuple(renditions),
            labels,
            max_pixels or self.settings.max_image_pixels,
        )
        return manage.create(self.duckdb, self.renditions, definition, self._opts(progress))

    @_writes
    def add_model(
        self,
        name: str,
        *,
        onnx: str | None = None,
        torchvision: str | None = None,
        python: str | None = None,
        weights: str | None = None,
        labels: str | Sequence[str],
        input_size: int,
        resize: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        layout: str = "NCHW",
    ) -> None:
        """Store a user's classifier in this database and register it as ``name`` (usable as
        ``classify(image, 'name')``): an ONNX file (``onnx``), or a torchvision architecture
        (``torchvision="resnet18"``) or your own (``python="package.module:factory"``, where
        ``factory(num_classes=N)`` builds the torch module) with a state-dict file
        (``weights``); the database stores the weights and the factory's name, so the module
        must be importable wherever the database is opened. ``labels`` is a file
        (one per line, or a JSON list) or the labels themselves; ``resize`` defaults to
        ``input_size * 8 / 7`` and mean/std to ImageNet's."""
        self._writable("add a model")
        from smolql.models import user
        from smolql.models.registry import models

        self._check()
        names = user.read_labels(labels) if isinstance(labels, str) else tuple(labels)
        model = user.UserModel(
            name,
            names,
            input_size,
            resize or round(input_size * 8 / 7),
            tuple(mean) if mean else user.IMAGENET_MEAN,
            tuple(std) if std else user.IMAGENET_STD,
            layout.upper(),
            onnx or weights or "",
        )
        ours = {m["name"] for m in user_models(self.duckdb)}
        builtin = set(models()) - ours - user.REGISTERED  # another database's are not
        arch = torchvision or (python and user.python_arch(python))
        if (onnx is None) == (arch is None) or (arch is None) != (weights is None):
            raise errors.InferenceError(
                "add_model takes either onnx=FILE, or torchvision=ARCH or"
                " python=MODULE:FACTORY with weights=FILE"
            )
        with self._lock:
            if onnx is not None:
                user.add(self.duckdb, model, onnx, builtin=builtin)
            else:
                user.add_torchvision(self.duckdb, model, arch, weights, builtin=builtin)

    def list_models(self) -> pa.Table:
        """Every model ``classify`` can use here: built-in, plugin, trained and the user's."""
        from smolql.models.registry import models

        added = {m["name"]: m for m in user_models(self.duckdb)}
        rows = [
            {
                "name": name,
                "kind": f"{spec.family} (this database)"
                if name in added
                else (spec.family or "plugin"),
                "input_size": spec.input_size,
                "classes": len(spec.labels),
                "description": spec.description,
            }
            for name, spec in sorted(models().items())
        ]
        return pa.Table.from_pylist(rows)

    @_writes
    def create_catalog_from(
        self,
        file: str,
        *,
        source: str | None = None,
        progress: bool | None = None,
    ) -> IngestSummary:
        """Create (or resume) the catalog a TOML catalog file describes
        (:mod:`smolql.ingest.declare`): its source, renditions, labels and boxes. ``source``
        replaces the file's (the demo writes its images first)."""
        from smolql.ingest.declare import load

        d = load(file)
        where = source or d.source
        if where is None:
            raise errors.CatalogInputError('the catalog file needs a source = "..."', file=file)
        summary = self.create_catalog(
            d.name,
            where,
            renditions=d.renditions,
            labels=d.labels,
            max_pixels=d.max_pixels,
            progress=progress,
        )
        if d.boxes:
            self.attach_boxes(d.name, d.boxes)
        return summary

    @_writes
    def attach_boxes(self, catalog: str, annotations: str, *, name: str | None = None) -> str:
        """Attach boxes (a COCO JSON, or a CSV/Parquet/JSON Lines table of file, x, y, w, h,
        label) to ``catalog`` as a view (default ``<catalog>_boxes``) joined to its images by
        file name; attaching again replaces them. Returns the view's name."""
        self._writable("attach boxes")
        from smolql.ingest.boxes import attach, read_boxes

        manage.get_definition(self.duckdb, catalog)  # an error naming it if there is none
        with self._lock:
            return attach(self.duckdb, catalog, read_boxes(annotations), name)

    @_writes
    def refresh_catalog(self, name: str, *, progress: bool | None = None) -> IngestSummary:
        """Ingest added and changed files and forget deleted ones; unchanged files are skipped."""
        self._writable("refresh a catalog")
        return manage.refresh(self.duckdb, self.renditions, name, self._opts(progress))

    @_writes
    def drop_catalog(self, name: str) -> None:
        self._writable("drop a catalog")
        manage.drop(self.duckdb, self.renditions, name)

    def catalogs(self) -> list[str]:
        return manage.names(self.duckdb)

    def describe_catalog(self, name: str) -> dict:
        return manage.describe(self.duckdb, name)

    def classify(
        self,
        catalog: str,
        *,
        model: str | None = None,
        backend: str | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
        rendition: str | None = None,
        where: str | None = None,
        progress: bool | None = None,
    ) -> pa.Table:
        """Classify a catalog's images (or one of its renditions): one row per image with
        ``id, label, score, class_index, model, error``; undecodable images get NULLs and an
        error naming the file."""
        from smolql.executor.local import run
        from smolql.planner.physical import make_plan, warn_if_uncalibrated

        refs = manage.image_refs(self.duckdb, catalog, rendition, where)
        plan = make_plan(
            self.settings,
            model=model,
            backend=backend,
            precision=precision,
            batch_size=batch_size,
            rendition=rendition,
        )
        warn_if_uncalibrated(plan)
        return run(plan, refs, progress=progress)

    @property
    def models_folder(self) -> str:
        """Where trained models' weights live: ``<db>.models/`` (in-memory: a temp folder)."""
        if self.renditions.temporary:
            return os.path.join(self.renditions.path, "_models")
        return os.path.abspath(self.database) + ".models"

    @_writes
    def profile(
        self,
        catalog: str,
        *,
        models: Sequence[str] | None = None,
        sample: int = PROFILE_SAMPLE,
        precisions: Sequence[str] | None = None,  # default: fp32, bf16 where offered, int8
        smaller_inputs: bool = True,
        labels: str | None = None,
        seed: int = 42,
        repeats: int = 3,
        say: Callable[[str], None] = lambda _: None,
    ):
        """Measure accuracy and throughput of every plan on a random sample of ``catalog``,
        fit and check the cost model, and store the profiles (see :mod:`smolql.profile.run`).
        ``models`` defaults to every registered model with weights at hand and the same labels
        as the default model, including the models trained in this database."""
        self._writable("store profiles")
        from smolql.lowres.trained import trained_renditions
        from smolql.planner.engines import profile_precisions
        from smolql.planner.physical import make_plan
        from smolql.profile.run import Options, profile_catalog

        names = list(models) if models else self._profile_models()
        trained = trained_renditions(self.duckdb)
        names += [t for t in trained if t not in names and (t.split("@")[0] in names)]
        defaults = {}
        self.calibrate(names, catalog=catalog, only_missing=True, say=say)
        for name in names:
            plan = make_plan(
                self.settings,
                model=name,
                backend=None,
                precision=None,
                batch_size=None,
                rendition=None,
            )
            defaults[name] = (plan.backend, plan.precision, plan.batch_size)
            split = (plan.decode_workers, plan.infer_threads)
        options = Options(
            tuple(names),
            sample,
            tuple(precisions or profile_precisions()),
            smaller_inputs,
            labels,
            seed,
            repeats,
        )
        return profile_catalog(
            self.duckdb,
            catalog,
            options,
            defaults=defaults,
            split=split,
            trained_for=trained,
            say=say,
        )

    @_writes
    def calibrate(
        self,
        models: Sequence[str] | None = None,
        *,
        catalog: str | None = None,
        paths: Sequence[str] | None = None,
        only_missing: bool = False,
        say: Callable[[str], None] = lambda _: None,
    ) -> dict[str, tuple[str, str, int, float]]:
        """Measure this machine's inference engines for ``models`` (default: the default
        model) on real images: ``paths``, a catalog's first 1,000 (speed is timed on 64; a
        faster reduced precision is compared with fp32 on all of them, against the catalog's
        ``class_index`` labels where it has them), or the photographs shipped in
        scikit-image, and its preprocessing rates (decode and resize/normalise per format and
        DCT scale) on the same images. Both are kept in the user's cache and serve every
        database; returns model -> (backend, precision, batch size, images/s)."""
        from smolql.models.registry import get_model
        from smolql.models.spec import imagenet_labels
        from smolql.planner import rates
        from smolql.planner.calibration import load
        from smolql.planner.engines import AGREEMENT_IMAGES, calibrate, calibration_images

        truth: dict[str, int] = {}
        if paths is None:
            refs = manage.image_refs(self.duckdb, catalog, None, None) if catalog else []
            paths = [r.path for r in refs[:AGREEMENT_IMAGES]] or calibration_images()
            truth = manage.class_indices(self.duckdb, catalog) if catalog else {}
        chosen = {}
        for name in models or [self.settings.model]:
            spec = get_model(name)
            stored = load(spec) if only_missing else None
            if stored is None:
                say(f"calibrating {name}: every backend, precision and batch size here")
            labels = truth if spec.labels == imagenet_labels() else {}  # ImageNet indices
            m = stored.chosen if stored else calibrate(spec, list(paths), labels)
            chosen[name] = (m.backend, m.precision, m.batch_size, m.images_per_s)
        if not only_missing or rates.load() is None:
            say("measuring decode and resize/normalise rates")
            rates.calibrate(
                list(paths)[: rates.RATE_IMAGES], get_model(self.settings.model).transform
            )
        return chosen

    def _profile_models(self) -> list[str]:
        from smolql.models.registry import get_model, models

        default = get_model(self.settings.model)
        return [
            name
            for name, spec in models().items()
            if spec.weights and not spec.base and spec.labels == default.labels
        ]

    @_writes
    def train(
        self,
        catalog: str,
        *,
        model: str,
        rendition: str,
        epochs: int = 10,
        where: str | None = None,
        limit: int | None = None,
        say: Callable[[str], None] = lambda _: None,
    ):
        """Fine-tune ``model`` for ``rendition`` inputs by distilling from the model itself on
        the catalog's originals (no labels); registers ``<model>@<rendition>``."""
        self._writable("store a trained model")
        from smolql.lowres.distill import TrainConfig
        from smolql.lowres.train import train

        return train(
            self.duckdb,
            self.models_folder,
            catalog,
            model,
            rendition,
            config=TrainConfig(epochs=epochs),
            where=where,
            limit=limit,
            say=say,
        )

    def stream(
        self, query: str, params: Sequence[Any] | dict | None = None, batch_size: int = 8192
    ) -> pa.RecordBatchReader:
        """Run SQL and stream the last statement's rows as Arrow record batches. The stream
        reads on this connection, inside its transaction: read it before the next statement
        on the same connection (which ends it), as with any DB-API cursor."""
        from smolql.execute import stream_script

        self._check()
        with self._lock:
            return stream_script(self.duckdb, self.settings, query, params, batch_size, self._plans)

    def sql(self, query: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        """Run SQL (SmolQL UDFs, ``SET smolql.*`` and ``EXPLAIN`` included) and return the last
        statement's result as an Arrow table. Like ``execute`` and every cursor, it runs on this
        connection's one DuckDB connection, so all of them share one transaction."""
        from smolql.execute import run_script

        self._check()
        with self._lock:
            return run_script(self.duckdb, self.settings, query, params, self._plans)

    def interrupt(self) -> None:
        """Stop the DuckDB work of the statement running on this connection (from another
        thread, e.g. on Ctrl-C); it then fails with an interrupt error."""
        self.duckdb.interrupt()

    def execute(self, query: str, params: Sequence[Any] | dict | None = None) -> Cursor:
        """Shortcut (as in sqlite3): a new DB-API cursor that has run ``query``; unlike a raw
        DuckDB cursor it understands SmolQL's UDFs and settings."""
        return self.cursor().execute(query, params)

    def close(self) -> None:
        """Close the connection; closing it again is an error (PEP 249: any operation on a
        closed connection raises)."""
        self._check()
        self.closed = True
        close_database(self.database, self.duckdb)
        self.renditions.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()

    def _opts(self, progress: bool | None) -> manage.IngestOptions:
        """Ingest on this machine's threads, or where the executor runs files (Ray tasks)."""
        from smolql.executor.base import where
        from smolql.executor.registry import get_executor

        run = getattr(get_executor(self.settings.executor), "ingest_files", None)
        if run is not None:
            run = partial(run, **where(run, self.settings.ray_address))
        return manage.IngestOptions(worker_count(self.settings), progress, run)


def connect(database: str | None = None, **settings: Any) -> Connection:
    """Open a SmolQL database (default: $SMOLQL_DB, else ./smolql.duckdb; or ":memory:")."""
    return Connection(database, **settings)
