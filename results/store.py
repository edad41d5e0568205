"""The results store of a search run: one SQLite file, one row per evaluated child.

A run directory holds ``results.sqlite`` beside the files other parts of the search write (config, searcher state).
The search driver is the only writer; the dashboard and ``launch.py results`` read the store while the search is
still writing it. SQLite in WAL mode gives exactly that: readers see the last committed snapshot and never block the
writer, and every child is written in one short transaction, so a reader -- or a resumed search after the driver is
killed -- never sees half a row.

Pure Python plus sqlite3 and pandas: importing this module pulls in neither TensorFlow nor Ray. What a row holds
is `results.schema`; files for other tools (Parquet, CSV) are `results.export`.

Rules the store enforces, because resuming a search depends on them (issue 7):

* a child is evaluated once: re-adding a ``trial_id`` with identical content is a no-op (a replayed write after a
  crash), with different content it is a ``ValueError`` -- a result is never silently overwritten;
* a failed child keeps why: ``failure_code`` (one of `search.failures.CODES`) is required when
  ``status == 'failed'`` and allowed only then, with ``failure_detail`` free text; an ``ok`` child has the accuracy
  and latency the reward was computed from.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from mnas.results.export import check_export_path, export_frame
from mnas.results.schema import (COLUMN_NAMES, COLUMNS, LOWER_IS_BETTER, NUMERIC, REQUIRED, STATUSES, canonical_json,
                                 check_status, children_frame, decode_row, encode_child, is_int)
from mnas.search.failures import split_reason
from mnas.search.fileio import current_umask
from mnas.search.runlock import RunInUse, other_owner

STORE_FILENAME = "results.sqlite"
SCHEMA_VERSION = 3
# What brings a store of version N - 1 to version N. New columns go at the end of COLUMNS, so an added column
# lands where the schema expects it; a reader of an older store (which it may not change) sees them as missing.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE children ADD COLUMN accuracy_source TEXT",),
    # Version 3 splits the free-text reason "code: message" into a code to group by and its detail. The right-hand
    # sides of an UPDATE read the row as it was, so both halves come from the old text.
    3: ("ALTER TABLE children RENAME COLUMN failure_reason TO failure_code",
        "ALTER TABLE children ADD COLUMN failure_detail TEXT",
        "UPDATE children SET failure_detail = mnas_failure_detail(failure_code), "
        "failure_code = mnas_failure_code(failure_code) WHERE failure_code IS NOT NULL"),
}
# Before version 3 the failure column was free text under another name; readers of such a store split it.
_LEGACY_FAILURE = "failure_reason"
BUSY_TIMEOUT_S = 30.0  # how long a reader or the writer waits on a lock before giving up
_STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")

class NoStoreError(FileNotFoundError, ValueError):
    """There is no results store where one was expected (read-only open of a path without one).

    Both a FileNotFoundError (what it is) and a ValueError (bad user input, which the command line reports as one
    line and exit status 2).
    """


_SQL_TYPES = {"int": "INTEGER", "real": "REAL"}  # every other kind is TEXT
_SELECT = f"SELECT {', '.join(COLUMN_NAMES)} FROM children"


def _select(present: tuple[str, ...]) -> str:
    """The SELECT of every column of the schema from an older store: NULL for the columns it lacks, and its
    free-text failure reason split into code and detail."""
    legacy = {"failure_code": f"mnas_failure_code({_LEGACY_FAILURE}) AS failure_code",
              "failure_detail": f"mnas_failure_detail({_LEGACY_FAILURE}) AS failure_detail"}
    columns = [legacy[name] if _LEGACY_FAILURE in present and name in legacy else
               name if name in present else f"NULL AS {name}" for name in COLUMN_NAMES]
    return "SELECT " + ", ".join(columns) + " FROM children"


def _add_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions that read a failure reason of a store before version 3 (migration and old readers)."""
    conn.create_function("mnas_failure_code", 1, lambda text: split_reason(text)[0], deterministic=True)
    conn.create_function("mnas_failure_detail", 1, lambda text: split_reason(text)[1], deterministic=True)


def utc_now() -> str:
    """The current time as the store writes times: ISO-8601, UTC, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def store_path(path: str | os.PathLike) -> Path:
    """The store file for `path`: a run directory (its ``results.sqlite``) or the store file itself."""
    path = Path(path)
    if path.is_dir():
        return path / STORE_FILENAME
    if path.exists() or path.suffix.lower() in _STORE_SUFFIXES:
        return path
    return path / STORE_FILENAME


# ---------------------------------------------------------------------------------------------------------------
# The store.


def _open_error(path: Path, err: sqlite3.DatabaseError) -> ValueError:
    """One clear sentence for a store SQLite cannot use: not a database at all, or not openable (permissions)."""
    if isinstance(err, sqlite3.OperationalError):
        return ValueError(f"cannot open results store {path}: {err}")
    return ValueError(f"{path} is not an SQLite database ({err})")


def _schema_sql() -> str:
    columns = []
    for column in COLUMNS:
        decl = f"{column.name} {_SQL_TYPES.get(column.kind, 'TEXT')}"
        if column.name == "trial_id":
            decl += " PRIMARY KEY NOT NULL"
        elif column.name in REQUIRED:
            decl += " NOT NULL"
        columns.append(decl)
    statuses = ", ".join(f"'{status}'" for status in STATUSES)
    columns.append(f"CHECK (status IN ({statuses}))")
    body = ",\n  ".join(columns)
    return (
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);\n"
        f"CREATE TABLE children (\n  {body}\n);\n"
        "CREATE INDEX children_status ON children (status);\n"
        "CREATE TABLE controller_stats (step INTEGER PRIMARY KEY NOT NULL, recorded_at TEXT NOT NULL, "
        "stats TEXT NOT NULL);\n"
    )


class ResultStore:
    """The children of one search run, in ``RUN_DIR/results.sqlite``.

    Args:
        path: a run directory or the store file itself.
        readonly: open for reading only (the dashboard, ``launch.py results``). A read-only open of a path without
            a store raises NoStoreError; a writable open creates the store (and the run directory).

    One process writes (the search driver); any number read, at any time. Use it as a context manager, or close().
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        self.path = store_path(path)
        self.readonly = readonly
        self._lock = threading.RLock()  # a dashboard may share one store between its threads
        if readonly:
            self._conn = self._open_reader()
        else:
            self._conn = self._open_writer()
        try:
            self._check_schema()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open_run(cls, run_dir: str | os.PathLike, readonly: bool = True) -> "ResultStore":
        """The store of an existing run directory (or store file); read-only unless asked otherwise."""
        run_dir = Path(run_dir)
        if not run_dir.exists():
            raise NoStoreError(f"no such run directory: {run_dir}")
        return cls(run_dir, readonly=readonly)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    # -- connections -------------------------------------------------------------------------------------------

    def _open_reader(self) -> sqlite3.Connection:
        if not self.path.is_file():
            folder = self.path.parent
            if not folder.is_dir():
                raise NoStoreError(f"no such run directory: {folder}")
            raise NoStoreError(f"no results store in {folder}: is it a run directory?")
        if not os.access(self.path, os.R_OK):
            raise ValueError(f"cannot open results store {self.path}: no permission to read it")
        uri = "file:" + urllib.parse.quote(str(self.path.absolute())) + "?mode=ro"
        conn = None
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()   # opens the file (and its WAL index)
            _add_functions(conn)
        except sqlite3.DatabaseError as err:
            if conn is not None:
                conn.close()
            if not isinstance(err, sqlite3.OperationalError) or \
                    ("unable to open" not in str(err) and "readonly" not in str(err)):
                raise _open_error(self.path, err) from None
            return self._open_immutable(err)
        return conn

    def _open_immutable(self, err: sqlite3.OperationalError) -> sqlite3.Connection:
        """A store in a folder this process may not write: a WAL reader must create the `-shm` index beside the
        store, and cannot. With no write-ahead log left to apply (a search that ended closes it), the file alone
        is the whole store, and SQLite can read it as immutable; with a log still holding changes, it cannot."""
        wal = Path(str(self.path) + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ValueError(f"cannot open results store {self.path} read-only: {err}; its write-ahead log "
                             f"({wal.name}) holds changes that only a process allowed to write in "
                             f"{self.path.parent} can apply (open it once as the folder's owner)")
        uri = "file:" + urllib.parse.quote(str(self.path.absolute())) + "?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            _add_functions(conn)
        except sqlite3.DatabaseError as again:
            conn.close()
            raise _open_error(self.path, again) from None
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            _add_functions(conn)
            # FULL: a child reported as stored survives a power cut, so a resumed search never re-runs it.
            conn.execute("PRAGMA synchronous = FULL")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise ValueError(f"{self.path}: SQLite could not switch to WAL mode (is it on a network drive?)")
            if not self._tables(conn):  # an empty database file: make it a store
                conn.execute("BEGIN IMMEDIATE")
                self._init_schema(conn)
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise _open_error(self.path, err) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self) -> None:
        """Builds a new store under a temporary name and links it into place, so no reader sees it half-made."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".creating")
        os.close(fd)
        try:
            os.chmod(tmp, 0o666 & ~current_umask())  # as readable as any file the user creates, not mkstemp's 0600
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                self._init_schema(conn)
                conn.execute("COMMIT")
            finally:
                conn.close()
            with contextlib.suppress(FileExistsError):  # another process won the race: use its store
                os.link(tmp, self.path)
        finally:
            for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> None:
        for statement in _schema_sql().split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                         [("schema_version", canonical_json(SCHEMA_VERSION)), ("created_at", canonical_json(utc_now()))])

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> set[str]:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_schema(self) -> None:
        try:
            tables = self._tables(self._conn)
            if not {"meta", "children", "controller_stats"} <= tables:
                raise ValueError(f"{self.path} is an SQLite database but not an MNAS results store "
                                 "(it lacks the meta, children and controller_stats tables)")
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = json.loads(row[0]) if row else None
            if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
                raise ValueError(f"{self.path} is a results store of schema version {version}; "
                                 f"this MNAS reads versions 1 to {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION and not self.readonly:
                self._migrate(version)
            columns = tuple(row[1] for row in self._conn.execute("PRAGMA table_info(children)"))
            named = tuple("failure_code" if name == _LEGACY_FAILURE else name for name in columns)
            if named != COLUMN_NAMES[:len(named)] or (not self.readonly and columns != COLUMN_NAMES):
                raise ValueError(f"{self.path}: table 'children' has columns ({', '.join(columns)}) that differ "
                                 f"from schema version {SCHEMA_VERSION}")
            self._select = _SELECT if columns == COLUMN_NAMES else _select(columns)
        except sqlite3.DatabaseError as err:
            raise _open_error(self.path, err) from None

    def _migrate(self, version: int) -> None:
        """Brings a store of an older schema version up to date, in one transaction -- never under a search that
        owns the folder: its older code writes the old columns and would fail on its next child."""
        owner = other_owner(str(self.run_dir))
        if owner is not None:
            raise RunInUse(f"{self.path} is of schema version {version} and a running search "
                           f"(process {owner or '(unknown)'}) writes it: read it with readonly=True "
                           "(ResultStore.open_run), or open it for writing after that search ends")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (canonical_json(SCHEMA_VERSION),))
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _write(self):
        """One short write transaction; BEGIN IMMEDIATE takes the write lock up front so it cannot deadlock."""
        if self.readonly:
            raise ValueError(f"{self.path} is open read-only; open ResultStore(..., readonly=False) to write")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:  # one statement: one consistent snapshot
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as err:
                if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                    raise
                raise ValueError(f"results store {self.path} is corrupt ({err}); {self._integrity()}") from None

    def _integrity(self) -> str:
        """What SQLite's own check says of a store that failed a read."""
        try:
            problems = [row[0] for row in self._conn.execute("PRAGMA integrity_check(5)").fetchall()]
        except sqlite3.DatabaseError as err:
            return f"PRAGMA integrity_check could not run either ({err})"
        if problems == ["ok"]:
            return "PRAGMA integrity_check finds no damage (the failure may be in a page it does not check)"
        return "PRAGMA integrity_check finds: " + "; ".join(problems)[:300]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r}, readonly={self.readonly})"

    # -- meta --------------------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        """Stores a JSON value under `key` (run config, start time, searcher name...). Overwrites."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"meta key must be a non-empty string, got {key!r}")
        if key == "schema_version":
            raise ValueError("meta key 'schema_version' belongs to the store itself")
        try:
            text = canonical_json(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"meta value for {key!r} is not JSON-serializable: {err}") from None
        with self._write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, text))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def meta(self) -> dict[str, Any]:
        """Every meta entry, decoded."""
        return {key: json.loads(value) for key, value in self._read("SELECT key, value FROM meta ORDER BY key")}

    # -- children ----------------------------------------------------------------------------------------------

    def add_child(self, record: Mapping[str, Any]) -> bool:
        """Stores one evaluated child in a single transaction.

        Fields are the names in COLUMN_NAMES; trial_id, arch and status are required. `arch` is a string of block
        strings or a list of them; times are ISO-8601 strings or datetimes; NaN numbers are stored as missing.

        Returns:
            True if the child was added, False if the same trial_id was already stored with the same content (a
            write replayed after a crash).

        Raises:
            ValueError: the record is malformed, or its trial_id is stored with different content.
        """
        row = encode_child(record)
        with self._write() as conn:
            existing = conn.execute(f"{self._select} WHERE trial_id = ?", (row[0],)).fetchone()
            if existing is not None:
                if tuple(existing) == row:
                    return False
                changed = [name for name, old, new in zip(COLUMN_NAMES, existing, row) if old != new]
                raise ValueError(f"trial {row[0]!r} is already stored with a different {', '.join(changed)}: "
                                 "a child is evaluated once and never overwritten")
            placeholders = ", ".join("?" * len(COLUMN_NAMES))
            conn.execute(f"INSERT INTO children ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})", row)
        return True

    def has_child(self, trial_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM children WHERE trial_id = ?", (trial_id,)))

    def child(self, trial_id: str) -> dict | None:
        """One child as a plain dict (JSON fields decoded), or None."""
        rows = self._read(f"{self._select} WHERE trial_id = ?", (trial_id,))
        return decode_row(rows[0]) if rows else None

    def count(self, status: str | None = None) -> int:
        """Number of children, of one status if given ('all' or None: every child)."""
        status = check_status(status)
        if status is None:
            return self._read("SELECT COUNT(*) FROM children")[0][0]
        return self._read("SELECT COUNT(*) FROM children WHERE status = ?", (status,))[0][0]

    def records(self, status: str | None = None) -> list[dict]:
        """The children as plain dicts, in the order they were stored -- for callers that want no pandas."""
        status = check_status(status)
        if status is None:
            rows = self._read(f"{self._select} ORDER BY rowid")
        else:
            rows = self._read(f"{self._select} WHERE status = ? ORDER BY rowid", (status,))
        return [decode_row(row) for row in rows]

    def children(self, status: str | None = None) -> pd.DataFrame:
        """The children as a DataFrame, in the order they were stored (completion order; `sample` gives the
        order they were proposed). Columns are COLUMN_NAMES; indices, latencies and extra hold decoded lists and
        dicts; integers are nullable Int64, times stay ISO-8601 strings."""
        return children_frame(self.records(status))

    def top(self, k: int, by: str = "reward", status: str | None = "ok") -> pd.DataFrame:
        """The k best children by one numeric column: highest first, except for costs (latency, params,
        madds, seconds), lowest first. Children missing that value are left out; ties keep storage order."""
        if not is_int(k) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if by not in NUMERIC:
            raise ValueError(f"cannot rank by {by!r}: use one of {', '.join(NUMERIC)}")
        status = check_status(status)
        order = "ASC" if by in LOWER_IS_BETTER else "DESC"
        where = f"{by} IS NOT NULL" + (" AND status = ?" if status else "")
        rows = self._read(f"{self._select} WHERE {where} ORDER BY {by} {order}, rowid LIMIT ?",
                          ((status,) if status else ()) + (int(k),))
        return children_frame([decode_row(row) for row in rows])

    def export(self, path: str | os.PathLike, status: str | None = None) -> Path:
        """Writes the children to .parquet or .csv (by suffix), atomically; see export_frame()."""
        check_export_path(path)  # fail on a bad path before reading the store
        return export_frame(self.children(status), path)

    # -- controller diagnostics --------------------------------------------------------------------------------

    def add_controller_stats(self, step: int, stats: Mapping[str, Any]) -> bool:
        """Records the diagnostics of PPO update `step` (entropy, approx_kl, clipfrac, pg_loss, baseline, ...).

        Idempotent on step: the same stats again are a no-op. Different stats for a recorded step replace them:
        unlike a child, an update is legitimately redone when a search resumes from a searcher state saved before
        that update, and the redone one is the update the controller's weights now come from.

        Returns:
            True if the row was written, False if it was already there unchanged.
        """
        if not is_int(step) or step < 0:
            raise ValueError(f"controller step must be a non-negative integer, got {step!r}")
        if not isinstance(stats, Mapping):
            raise ValueError(f"controller stats must be a mapping, got {type(stats).__name__}")
        stats = dict(stats)
        own_step = stats.pop("step", step)  # a controller's diagnostics often carry their own step: it must agree
        if own_step != step:
            raise ValueError(f"controller stats say step {own_step!r} but are recorded as step {step}")
        for key in stats:
            if not isinstance(key, str) or key == "recorded_at":
                raise ValueError(f"controller stats key {key!r} is not allowed (string keys other than "
                                 "'recorded_at')")
        try:  # numbers (numpy scalars included) are what they should hold; anything JSON is accepted
            text = canonical_json(stats)
        except (TypeError, ValueError) as err:
            raise ValueError(f"controller stats of step {step} are not JSON-serializable: {err}") from None
        with self._write() as conn:
            existing = conn.execute("SELECT stats FROM controller_stats WHERE step = ?", (int(step),)).fetchone()
            if existing is not None and existing[0] == text:
                return False
            conn.execute("INSERT INTO controller_stats (step, recorded_at, stats) VALUES (?, ?, ?) "
                         "ON CONFLICT (step) DO UPDATE SET recorded_at = excluded.recorded_at, stats = excluded.stats",
                         (int(step), utc_now(), text))
        return True

    def controller_stats(self) -> pd.DataFrame:
        """One row per PPO update, by step: step, recorded_at, then one column per diagnostic."""
        rows = self._read("SELECT step, recorded_at, stats FROM controller_stats ORDER BY step")
        records = [{"step": step, "recorded_at": recorded_at, **json.loads(stats)} for step, recorded_at, stats in rows]
        frame = pd.DataFrame.from_records(records, columns=None if records else ["step", "recorded_at"])
        return frame.astype({"step": "int64"})
