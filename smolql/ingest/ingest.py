"""Bring a catalog's tables in line with its source folder, in parallel and crash-safely.

Each file is processed by a worker thread (or a Ray task, with the Ray executor); results are
committed to DuckDB by this process in small transactions, so a killed ingest leaves only whole
rows behind and a re-run skips them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import duckdb
from tqdm import tqdm

from smolql.imaging.decode import turbo
from smolql.ingest.definition import RenditionSpec
from smolql.ingest.worker import Ingested, Skipped, ingest_file
from smolql.sources import TMP_MARK, files_under, io_threads, is_remote, remove, stat
from smolql.storage import catalogs as stored

Runner = Callable[
    [list[tuple[int, str]], tuple[RenditionSpec, ...], str, int, int],
    Iterator[tuple[int, Ingested | Skipped]],
]
COMMIT_EVERY = 512  # images per commit (each costs a DuckDB transaction: at 64, a third of a
COMMIT_SECONDS = 1.0  # 100,000-image ingest) and at most this much work uncommitted


@dataclass
class IngestSummary:
    images: int = 0
    skipped: int = 0
    processed: int = 0
    unchanged: int = 0
    removed: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)

    def line(self, catalog: str) -> str:
        """The one-line summary printed after an ingest."""
        text = f"{catalog}: {self.images} images, {self.skipped} skipped"
        if self.skipped:
            text += f" (see: smolql catalog show {catalog})"
        return (
            text
            + f"; {self.processed} processed, {self.unchanged} unchanged, "
            + (f"{self.removed} removed")
        )


@dataclass(frozen=True)
class _Work:
    todo: list[tuple[int, str]]
    removed_ids: list[int]
    unchanged: int
    first_new_id: int  # ids from here on are new: no earlier row to replace


def ingest(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    paths: list[str],
    specs: tuple[RenditionSpec, ...],
    out_dir: str,
    *,
    max_pixels: int,
    workers: int,
    progress: bool | None = None,
    run: Runner | None = None,
) -> IngestSummary:
    """Ingest ``paths`` into ``catalog``: new and changed files processed, gone ones removed.
    ``run`` processes the files (default: :func:`threaded` on this machine; the Ray executor
    runs them as Ray tasks); results are committed here, on the driver, either way."""
    turbo()  # fail fast, once, if libjpeg-turbo is missing, instead of once per file
    work = _plan(con, catalog, paths, specs)
    stored.remove_images(con, catalog, work.removed_ids, paths)
    # Ids from here on are new; with no error rows either, a batch of them replaces nothing.
    new_from = work.first_new_id if stored.counts(con, catalog)[1] == 0 else None
    summary = IngestSummary(unchanged=work.unchanged, removed=len(work.removed_ids))
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(work.todo), unit="img", desc=f"ingest {catalog}", disable=not show)
    batch: list[tuple[int, Ingested | Skipped]] = []
    last_commit = time.monotonic()
    with bar:
        for image_id, result in (run or threaded)(work.todo, specs, out_dir, max_pixels, workers):
            batch.append((image_id, result))
            bar.update()
            if len(batch) >= COMMIT_EVERY or time.monotonic() - last_commit > COMMIT_SECONDS:
                _commit(con, catalog, batch, summary, new_from)
                batch, last_commit = [], time.monotonic()
        _commit(con, catalog, batch, summary, new_from)
    remove_orphan_files(con, catalog, out_dir)
    summary.images, summary.skipped = stored.counts(con, catalog)
    return summary


def _plan(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    paths: list[str],
    specs: tuple[RenditionSpec, ...],
) -> _Work:
    existing = stored.recorded_files(con, catalog)
    renditions: dict[int, set[str]] = {}
    rows = stored.rendition_files(con, catalog)
    stored_remotely = _listed(rows)  # object storage: one listing, not a request per file
    for image_id, spec, path in rows:
        if path in stored_remotely if is_remote(path) else os.path.exists(path):
            renditions.setdefault(image_id, set()).add(spec)
    wanted = {str(s) for s in specs}
    next_id = first_new_id = max((v[0] for v in existing.values()), default=0) + 1
    todo: list[tuple[int, str]] = []
    for path in paths:
        if path not in existing:
            todo.append((next_id, path))
            next_id += 1
            continue
        image_id, recorded = existing[path]
        if _changed(path, recorded) or not wanted <= renditions.get(image_id, set()):
            todo.append((image_id, path))
    present = set(paths)
    gone = [(v[0], p) for p, v in existing.items() if p not in present]
    return _Work(
        todo=todo,
        removed_ids=[i for i, _ in gone],
        unchanged=len(existing) - len(gone) - sum(1 for _, p in todo if p in existing),
        first_new_id=first_new_id,
    )


def _listed(rows: list[tuple[int, str, str]]) -> set[str]:
    """The rendition files present under the object-storage folders ``rows`` name (one
    listing each, not a request per file)."""
    folders = {p.rsplit("/", 3)[0] for _, _, p in rows if is_remote(p)}  # <dir>/<spec>/<ab>/f
    return {f for folder in folders for f in files_under(folder)}


def _changed(path: str, recorded: tuple) -> bool:
    """Whether a file may differ from what was ingested: any change of its source's signature
    (for local files size, mtime, ctime or inode: a replacement with the same size and mtime
    still changes ctime; rows from before ctime was recorded count as changed)."""
    try:
        return stat(path) != recorded
    except OSError:
        return True


def threaded(
    todo: list[tuple[int, str]],
    specs: tuple[RenditionSpec, ...],
    out_dir: str,
    max_pixels: int,
    workers: int,
) -> Iterator[tuple[int, Ingested | Skipped]]:
    """This machine's threads: results as workers finish, a few files in flight per worker
    (more threads where the source is remote: their time is round trips)."""
    workers = io_threads(todo[0][1] if todo else None, workers)
    window = 4 * workers
    pending: dict[Future, int] = {}
    items = iter(todo)
    with ThreadPoolExecutor(workers, thread_name_prefix="smolql-ingest") as pool:
        while True:
            for image_id, path in items:
                pending[pool.submit(ingest_file, path, specs, out_dir, max_pixels)] = image_id
                if len(pending) >= window:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


def _commit(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    batch: list[tuple[int, Ingested | Skipped]],
    summary: IngestSummary,
    new_from: int | None,
) -> None:
    """Store a batch of results; a batch of ids all at or past ``new_from`` replaces
    nothing (no earlier rows to delete)."""
    if not batch:
        return
    rows, renditions, errors = [], [], []
    for image_id, result in batch:
        if isinstance(result, Skipped):
            errors.append({"catalog": catalog, "path": result.path, "reason": result.reason})
            summary.reasons.append((result.path, result.reason))
            continue
        rows.append({"catalog": catalog, "id": image_id, **result.row})
        renditions.extend(
            {"catalog": catalog, "image_id": image_id, "hash": result.row["hash"], **vars(r)}
            for r in result.renditions
        )
    summary.processed += len(rows)
    stored.replace_images(
        con,
        catalog,
        [i for i, _ in batch],
        [r.path if isinstance(r, Skipped) else r.row["path"] for _, r in batch],
        rows,
        renditions,
        errors,
        replaces=new_from is None or min(i for i, _ in batch) < new_from,
    )


def remove_orphan_files(con: duckdb.DuckDBPyConnection, catalog: str, out_dir: str) -> int:
    """Delete rendition files no row points at (replaced content, leftovers of a killed run)."""
    keep = {p for _, _, p in stored.rendition_files(con, catalog)}
    if is_remote(out_dir):
        orphans = [p for p in files_under(out_dir) if p not in keep]
        for p in orphans:
            remove(p)
        return len(orphans)
    if not os.path.isdir(out_dir):
        return 0
    removed = 0
    for root, _dirs, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(root, name)
            if path not in keep or TMP_MARK in name:
                os.remove(path)
                removed += 1
    return removed
