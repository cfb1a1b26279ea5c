"""The embedded DuckDB database: opening it and its ``smolql`` system schema."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from typing import ClassVar

import duckdb
import pyarrow as pa

from smolql.errors import CatalogError

SCHEMA = "smolql"
TOPK_SQL = "STRUCT(class_index INTEGER, label VARCHAR, score DOUBLE)[]"  # a cached top-k list
MEMORY = ":memory:"

_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.catalogs (
        name VARCHAR, source VARCHAR, renditions VARCHAR[], labels VARCHAR,
        max_pixels BIGINT, status VARCHAR, created TIMESTAMP, updated TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.images (
        catalog VARCHAR, id INTEGER, file VARCHAR, path VARCHAR, format VARCHAR,
        width INTEGER, height INTEGER, stored_width INTEGER, stored_height INTEGER,
        mode VARCHAR, bytes BIGINT, mtime TIMESTAMP, mtime_ns BIGINT, hash VARCHAR,
        orientation TINYINT, progressive BOOLEAN, subsampling VARCHAR,
        ctime_ns BIGINT, inode BIGINT)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.renditions (
        catalog VARCHAR, image_id INTEGER, spec VARCHAR, path VARCHAR,
        width INTEGER, height INTEGER, bytes BIGINT, hash VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.errors (
        catalog VARCHAR, path VARCHAR, reason VARCHAR, recorded TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.udf_cache (
        hash VARCHAR, model VARCHAR, weights VARCHAR, plan VARCHAR, roi VARCHAR, k INTEGER,
        topk {TOPK_SQL}, created TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.plan_profiles (
        catalog VARCHAR, machine VARCHAR, plan VARCHAR, model VARCHAR, weights VARCHAR,
        source VARCHAR, scale INTEGER, input_size INTEGER, backend VARCHAR, precision VARCHAR,
        batch_size INTEGER, images INTEGER, correct INTEGER, accuracy DOUBLE,
        accuracy_basis VARCHAR, reference BOOLEAN, decode_ms DOUBLE, resize_ms DOUBLE,
        infer_ms DOUBLE, bytes DOUBLE, decoded_pixels DOUBLE, measured_per_s DOUBLE,
        predicted_per_s DOUBLE, profiled TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.cost_models (
        catalog VARCHAR, machine VARCHAR, params VARCHAR, max_error DOUBLE, fitted TIMESTAMP)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.trained_models (
        name VARCHAR, base VARCHAR, rendition VARCHAR, weights VARCHAR, catalog VARCHAR,
        train_images INTEGER, epochs INTEGER, seconds DOUBLE, created TIMESTAMP)""",
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.user_models (
        name VARCHAR, onnx BLOB, hash VARCHAR, labels VARCHAR[], input_size INTEGER,
        resize INTEGER, mean DOUBLE[], std DOUBLE[], layout VARCHAR, source VARCHAR,
        arch VARCHAR, weights BLOB, added TIMESTAMP)""",
)

# The system schema's version, and how to bring an older database up to it. A database without
# a recorded version predates versioning: version 1 (it may lack what later versions added).
SCHEMA_VERSION = 4
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: file signatures gained ctime and inode; old rows get NULLs, which count as
    # "unverified" (the content is hashed again before it is trusted).
    2: (
        f"ALTER TABLE {SCHEMA}.images ADD COLUMN IF NOT EXISTS ctime_ns BIGINT",
        f"ALTER TABLE {SCHEMA}.images ADD COLUMN IF NOT EXISTS inode BIGINT",
    ),
    # 3: the version itself is recorded (smolql.meta); per-database engine calibrations moved
    # to the per-user cache, so their table is dropped.
    3: (f"DROP TABLE IF EXISTS {SCHEMA}.backend_profiles",),
    # 4: users' own models live in the database (smolql.user_models; created with the rest).
    4: (),
}


# A file is attached under this fixed name rather than opened directly: DuckDB names a
# database after its file, and the default file smolql.duckdb would make ``smolql.errors``
# ambiguous between the database and the system schema.
ALIAS = "smolqldb"


class Database:
    """One DuckDB instance per database file in this process, shared by every connection to
    it (DuckDB refuses to attach one file twice): each SmolQL connection gets its own DuckDB
    connection to the shared instance, and the instance closes with the last of them."""

    _lock = threading.Lock()
    _open: ClassVar[dict[str, tuple[duckdb.DuckDBPyConnection, int]]] = {}

    @classmethod
    def connect(cls, path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        if path == MEMORY:
            return _initialise(duckdb.connect(MEMORY))
        key = os.path.realpath(path)
        with cls._lock:
            base, users = cls._open.get(key, (None, 0))
            if base is None:
                base = _opened(_attach(path, read_only), path, read_only)
            elif is_read_only(base) != read_only:
                mode = "read-only" if is_read_only(base) else "writable"
                raise CatalogError(
                    f"this process has the database open {mode} already; open it the same way"
                    " (one file is one DuckDB instance per process)",
                    file=path,
                )
            cls._open[key] = (base, users + 1)
            return cursor(base)

    @classmethod
    def release(cls, path: str, con: duckdb.DuckDBPyConnection) -> None:
        con.close()
        if path == MEMORY:
            return
        key = os.path.realpath(path)
        with cls._lock:
            base, users = cls._open.get(key, (None, 0))
            if base is None:
                return
            if users <= 1:
                del cls._open[key]
                base.close()
            else:
                cls._open[key] = (base, users - 1)


def open_database(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) a SmolQL database and make sure its system schema exists;
    close it with :func:`close_database`. ``read_only``: DuckDB's shared read-only mode (several
    processes may read at once while none writes); the database must exist and be current."""
    return Database.connect(path, read_only)


def is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con``'s database file is attached read-only."""
    row = fetch_one(con, "SELECT readonly FROM duckdb_databases() WHERE database_name = ?",
                    [ALIAS])  # fmt: skip
    return bool(row and row[0])


def writable(path: str) -> bool:
    """Whether this process may write ``path`` (a new file: whether its folder is writable)."""
    if not os.path.exists(path):
        return os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK)
    try:
        os.close(os.open(path, os.O_RDWR))
        return True
    except PermissionError:
        return False
    except OSError:
        return True  # another problem: let the open itself report it


def close_database(path: str, con: duckdb.DuckDBPyConnection) -> None:
    Database.release(path, con)


def _attach(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(MEMORY)
    literal = "'" + path.replace("'", "''") + "'"
    if read_only and not os.path.exists(path):
        raise CatalogError("cannot open a database read-only: no such file", file=path)
    try:
        con.execute(f"ATTACH {literal} AS {ALIAS}" + (" (READ_ONLY)" if read_only else ""))
    except duckdb.Error as e:
        con.close()
        if "Conflicting lock" in str(e):
            pid = re.search(r"\(PID (\d+)\)", str(e))
            who = f"process {pid.group(1)}" if pid else "another process"
            raise CatalogError(
                f"cannot open database: {who} has it open"
                + (" for writing" if read_only else "")
                + ". Wait for it to finish (or close it); processes that only read can share"
                " the file with read_only=True (smolql --read-only) while none writes",
                file=path,
            ) from e
        raise CatalogError(f"cannot open database: {e}", file=path) from e
    con.execute(f"USE {ALIAS}")
    return con


def _opened(
    con: duckdb.DuckDBPyConnection, path: str, read_only: bool
) -> duckdb.DuckDBPyConnection:
    """Initialise a just-attached file; on failure detach it (the file stays openable)."""
    try:
        return _check_current(con) if read_only else _initialise(con)
    except Exception:
        con.close()
        raise


def _check_current(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A read-only database cannot be created or migrated: it must be current already."""
    try:
        row = fetch_one(con, f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
    except duckdb.Error:
        row = None
    if not row or int(row[0]) != SCHEMA_VERSION:
        found = f"schema version {row[0]}" if row else "no SmolQL schema"
        raise CatalogError(
            f"cannot open read-only: the database has {found}, this SmolQL needs version"
            f" {SCHEMA_VERSION} (open it once writable to create or upgrade it)"
        )
    return con


def _initialise(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Create the system schema, or migrate an older one to :data:`SCHEMA_VERSION`."""
    existed = bool(
        con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
            " AND table_catalog = current_database()",
            [SCHEMA, "images"],
        ).fetchall()
    )
    for statement in _DDL:
        con.execute(statement)
    row = fetch_one(con, f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
    version = int(row[0]) if row else (1 if existed else SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"this database has system schema version {version}, written by a newer SmolQL;"
            f" this one reads up to version {SCHEMA_VERSION}: upgrade smolql"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS.get(step, ()):
            con.execute(statement)
    if not row or version != SCHEMA_VERSION:
        con.execute(
            f"INSERT OR REPLACE INTO {SCHEMA}.meta VALUES ('schema_version', ?)",
            [str(SCHEMA_VERSION)],
        )
    return con


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    row = fetch_one(con, f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
    return int(row[0]) if row else 1


def insert(
    con: duckdb.DuckDBPyConnection, table: str, row: dict, now: tuple[str, ...] = ()
) -> None:
    """Insert one row into a system table by column name (columns not given are NULL, those
    in ``now`` get the current time): no statement depends on the table's column order."""
    columns = [*row, *now]
    values = ", ".join(["?"] * len(row) + ["now()"] * len(now))
    con.execute(
        f"INSERT INTO {SCHEMA}.{table} ({', '.join(columns)}) VALUES ({values})",
        list(row.values()),
    )


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A new cursor on the same database, with the same default database selected."""
    cur = con.cursor()
    if con.execute("SELECT current_database()").fetchall()[0][0] == ALIAS:
        cur.execute(f"USE {ALIAS}")
    return cur


RENDITIONS_ENV = "SMOLQL_RENDITIONS"


class RenditionRoot:
    """Where rendition files live: ``<db>.renditions/`` beside the database file, or in the
    folder or object-storage prefix ``$SMOLQL_RENDITIONS`` names (e.g. a file system every Ray
    node mounts, or ``s3://bucket/renditions``), as ``<that>/<db file name>.renditions/``.
    Rows record each file's full path, so moving the root later does not lose earlier
    renditions.

    An in-memory database gets a temporary folder that is removed on :meth:`close`.
    """

    def __init__(self, db_path: str) -> None:
        self.temporary = db_path == MEMORY
        shared = os.environ.get(RENDITIONS_ENV)
        if self.temporary:
            self.path = tempfile.mkdtemp(prefix="smolql-renditions-")
        elif shared and "://" in shared:  # an object-storage prefix every node reaches
            self.path = f"{shared.rstrip('/')}/{os.path.basename(db_path)}.renditions"
        elif shared:
            self.path = os.path.join(os.path.abspath(shared), os.path.basename(db_path))
            self.path += ".renditions"
        else:
            self.path = os.path.abspath(db_path) + ".renditions"

    def catalog_dir(self, catalog: str) -> str:
        return os.path.join(self.path, catalog)

    def close(self) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """The first row of a query, or None; reads the whole result so that the connection is free
    for the next statement (DuckDB refuses new work while a result is pending)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def image_signatures(
    con: duckdb.DuckDBPyConnection, pairs: set[tuple[str, int]]
) -> dict[tuple[str, int], tuple]:
    """Per (catalog, id): the path, hash, signature (bytes, mtime_ns, ctime_ns, inode) and
    orientation recorded at ingest."""
    if not pairs:
        return {}
    ids = pa.table(
        {
            "catalog": pa.array([c for c, _ in pairs], pa.string()),
            "id": pa.array([i for _, i in pairs], pa.int64()),
        }
    )
    con.register("__smolql_ids", ids)
    try:
        rows = con.execute(
            "SELECT i.catalog, i.id, i.path, i.hash, i.bytes, i.mtime_ns, i.ctime_ns, i.inode,"
            f" i.orientation FROM {SCHEMA}.images i JOIN __smolql_ids q"
            " ON i.catalog = q.catalog AND i.id = q.id"
        ).fetchall()
    finally:
        con.unregister("__smolql_ids")
    return {(c, i): tuple(rest) for c, i, *rest in rows}


def renditions_by_hash(
    con: duckdb.DuckDBPyConnection, hashes: set[str], spec: str
) -> dict[str, str]:
    """The file of rendition ``spec`` per original content hash (renditions are
    content-addressed)."""
    if not hashes:
        return {}
    con.register("__smolql_hashes", pa.table({"hash": pa.array(sorted(hashes), pa.string())}))
    try:
        rows = con.execute(
            f"SELECT r.hash, any_value(r.path) FROM {SCHEMA}.renditions r"
            " JOIN __smolql_hashes q USING (hash) WHERE r.spec = ? GROUP BY r.hash",
            [spec],
        ).fetchall()
    finally:
        con.unregister("__smolql_hashes")
    return dict(rows)


HEADER_SAMPLE = 256  # images a plan's cost is predicted over


def image_sample(con: duckdb.DuckDBPyConnection, catalog: str, n: int) -> list[tuple[str, int]]:
    """A fixed sample of up to ``n`` decodable images of a catalog: (path, orientation)."""
    return con.execute(
        f"SELECT path, coalesce(orientation, 1) FROM {SCHEMA}.images WHERE catalog = ?"
        f" AND format IS NOT NULL ORDER BY hash(id) LIMIT {int(n)}",
        [catalog],
    ).fetchall()


def image_headers(
    con: duckdb.DuckDBPyConnection, catalog: str, source: str | None
) -> list[tuple[str, int, int, int, int]]:
    """A fixed sample of a catalog's images as the planner sees them without reading a file:
    (format, bytes, stored width, stored height, EXIF orientation); of rendition ``source``
    when given (stored upright, in the rendition's format)."""
    if source is None:
        return con.execute(
            f"SELECT format, bytes, stored_width, stored_height, coalesce(orientation, 1)"
            f" FROM {SCHEMA}.images WHERE catalog = ? AND format IS NOT NULL"
            f" ORDER BY hash(id) LIMIT {HEADER_SAMPLE}",
            [catalog],
        ).fetchall()
    return con.execute(
        f"SELECT split_part(spec, ':', 2), bytes, width, height, 1 FROM {SCHEMA}.renditions"
        f" WHERE catalog = ? AND spec = ? ORDER BY hash(image_id) LIMIT {HEADER_SAMPLE}",
        [catalog, source],
    ).fetchall()
