"""The results store of a search run: one SQLite file, one row per evaluated child.

A run directory holds ``results.sqlite`` beside the files other parts of the search write (config, searcher state).
The search driver is the only writer; the dashboard and ``launch.py results`` read the store while the search is
still writing it. SQLite in WAL mode gives exactly that: readers see the last committed snapshot and never block the
writer, and every child is written in one short transaction, so a reader -- or a resumed search after the driver is
killed -- never sees half a row.

Pure Python plus sqlite3 and pandas: importing this module pulls in neither TensorFlow nor Ray.

Rules the store enforces, because resuming a search depends on them (issue 7):

* a child is evaluated once: re-adding a ``trial_id`` with identical content is a no-op (a replayed write after a
  crash), with different content it is a ``ValueError`` -- a result is never silently overwritten;
* a failed child keeps why: ``failure_code`` (one of `search.failures.CODES`) is required when
  ``status == 'failed'`` and allowed only then, with ``failure_detail`` free text; an ``ok`` child has the accuracy
  and latency the reward was computed from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import json
import math
import numbers
import os
import sqlite3
import tempfile
import threading
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from mnas.search.failures import CODES, split_reason
from mnas.search.fileio import atomic_write, current_umask

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
STATUSES = ("ok", "failed", "pruned")
BUSY_TIMEOUT_S = 30.0  # how long a reader or the writer waits on a lock before giving up
_STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")

# pandas 3 has a real string dtype with NaN as its missing value; pandas 2's "str" would turn None into 'None'.
_TEXT_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


class NoStoreError(FileNotFoundError, ValueError):
    """There is no results store where one was expected (read-only open of a path without one).

    Both a FileNotFoundError (what it is) and a ValueError (bad user input, which the command line reports as one
    line and exit status 2).
    """


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the ``children`` table: its name, its kind (how values are checked, stored and decoded)."""

    name: str
    kind: str
    doc: str


# The schema, in table order. Kinds: id/text/time/arch/status/failure -> TEXT, int -> INTEGER, real -> REAL,
# indices/latencies/extra -> TEXT holding JSON.
COLUMNS: tuple[Column, ...] = (
    Column("trial_id", "id", "unique id of the child (the Ray Tune trial id)"),
    Column("sample", "int", "order in which the searcher suggested the child (0-based)"),
    Column("controller_step", "int", "PPO updates done when the child was sampled"),
    Column("strategy", "text", "searcher that proposed it, e.g. 'mnas', 'random'"),
    Column("arch", "arch", "block strings joined by single spaces"),
    Column("indices", "indices", "JSON list of the choice indices the controller emitted"),
    Column("accuracy", "real", "proxy-task accuracy on held-out data, in [0, 1]"),
    Column("latency_ms", "real", "the latency used in the reward, milliseconds"),
    Column("latency_source", "text", "where latency_ms comes from, e.g. 'pixel1-predicted', 'host-tflite'"),
    Column("latencies", "latencies", "JSON {source: ms} of every latency measured or predicted"),
    Column("reward", "real", "the MNAS reward (or the documented reward of a failed child)"),
    Column("params", "int", "trainable parameters, counted analytically"),
    Column("madds", "int", "multiply-adds at the deployment resolution"),
    Column("status", "status", "'ok', 'failed' or 'pruned' (stopped early by a scheduler)"),
    Column("failure_code", "failure", "why a child failed, one of search.failures.CODES (only for 'failed')"),
    Column("train_seconds", "real", "proxy training time"),
    Column("eval_seconds", "real", "evaluation time"),
    Column("latency_seconds", "real", "time spent measuring or predicting latency"),
    Column("total_seconds", "real", "wall time of the whole trial"),
    Column("started_at", "time", "ISO-8601 UTC"),
    Column("finished_at", "time", "ISO-8601 UTC"),
    Column("extra", "extra", "JSON object of anything else: proxy settings, log_prob, ..."),
    # schema version 2
    Column("accuracy_source", "text", "what measured `accuracy`: 'proxy' (the child was trained) or "
                                      "'surrogate:<model file>' (predicted; nothing was trained); missing in "
                                      "stores written before version 2, whose children were all trained"),
    # schema version 3
    Column("failure_detail", "text", "the failure's message (a step number, the file and line, ...)"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in COLUMNS)
REQUIRED = ("trial_id", "arch", "status")
JSON_COLUMNS = tuple(column.name for column in COLUMNS if column.kind in ("indices", "latencies", "extra"))
# Columns where a smaller value is the better one (top() sorts them ascending).
LOWER_IS_BETTER = ("latency_ms", "params", "madds", "train_seconds", "eval_seconds", "latency_seconds",
                   "total_seconds")

_SQL_TYPES = {"int": "INTEGER", "real": "REAL"}  # every other kind is TEXT
_PANDAS_DTYPES = {"int": "Int64", "real": "float64", "indices": object, "latencies": object, "extra": object}
_NUMERIC = tuple(column.name for column in COLUMNS if column.kind in ("int", "real"))
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
# Checking and encoding one child record.


def _json_default(value):
    # numpy scalars and arrays (no numpy import needed); anything else is not JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _dumps(value) -> str:
    """Canonical JSON, so that the same content always gives the same text (idempotent re-adds compare text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _real(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value  # SQLite stores NaN as NULL anyway: say so explicitly


def _encode_value(column: Column, value, where: str):
    """`value` as stored in SQLite, or ValueError naming the field. None (missing) stays None."""
    name, kind = column.name, column.kind
    if value is None:
        return None
    if kind in ("id", "text", "status", "failure"):
        if not isinstance(value, str):
            raise ValueError(f"{where}: field '{name}' must be a string, got {type(value).__name__} {value!r}")
        if kind == "id" and not value.strip():
            raise ValueError(f"{where}: field '{name}' must not be empty")
        if kind == "status" and value not in STATUSES:
            raise ValueError(f"{where}: status must be one of {', '.join(STATUSES)}, got {value!r}")
        if kind == "failure" and value not in CODES:
            raise ValueError(f"{where}: failure_code must be one of {', '.join(CODES)}, got {value!r}")
        return value
    if kind == "arch":
        tokens = value.split() if isinstance(value, str) else value
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Iterable):
            raise ValueError(f"{where}: field 'arch' must be block strings (one string, or a list of them)")
        tokens = list(tokens)
        if not tokens or not all(isinstance(token, str) and token.strip() for token in tokens):
            raise ValueError(f"{where}: field 'arch' must hold at least one block string and nothing else")
        return " ".join(" ".join(tokens).split())
    if kind == "int":
        if not _is_int(value):
            raise ValueError(f"{where}: field '{name}' must be an integer, got {value!r}")
        return int(value)
    if kind == "real":
        if not _is_real(value):
            raise ValueError(f"{where}: field '{name}' must be a number, got {value!r}")
        return _real(value)
    if kind == "time":
        return _encode_time(value, name, where)
    if kind == "indices":
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise ValueError(f"{where}: field 'indices' must be a list of integers, got {value!r}")
        items = list(value)
        bad = [item for item in items if not _is_int(item)]
        if bad:
            raise ValueError(f"{where}: field 'indices' must hold integers only, got {bad[0]!r}")
        return _dumps([int(item) for item in items])
    if kind == "latencies":
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: field 'latencies' must be a mapping {{source: ms}}, got {value!r}")
        clean = {}
        for source, ms in value.items():
            if not isinstance(source, str) or not (ms is None or _is_real(ms)):
                raise ValueError(f"{where}: field 'latencies' must map source names to milliseconds, "
                                 f"got {source!r}: {ms!r}")
            clean[source] = None if ms is None else _real(ms)
        return _dumps(clean)
    if kind == "extra":
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise ValueError(f"{where}: field 'extra' must be a mapping with string keys, got {value!r}")
        try:
            return _dumps(dict(value))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: field 'extra' is not JSON-serializable: {err}") from None
    raise AssertionError(f"unknown column kind {kind}")  # a bug in COLUMNS, not bad input


def _encode_time(value, name: str, where: str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # datetime.utcnow() and friends: naive but UTC
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, str):
        try:  # Python 3.10's fromisoformat does not take the 'Z' suffix
            datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            raise ValueError(f"{where}: field '{name}' must be an ISO-8601 time, got {value!r}") from None
        return value
    raise ValueError(f"{where}: field '{name}' must be an ISO-8601 string or a datetime, got {value!r}")


def encode_child(record: Mapping[str, Any]) -> tuple:
    """Checks one child record and returns its row: one SQLite value per column of COLUMNS, in order.

    Raises:
        ValueError: naming the unknown, missing or ill-typed field.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a child record must be a mapping of field names to values, got {type(record).__name__}")
    unknown = [key for key in record if key not in COLUMN_NAMES]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), COLUMN_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known fields: {', '.join(COLUMN_NAMES)})"
        raise ValueError(f"unknown field {key!r} in child record{hint}")
    where = f"child {record.get('trial_id')!r}"
    missing = [name for name in REQUIRED if record.get(name) is None]
    if missing:
        raise ValueError(f"{where}: missing required field(s): {', '.join(missing)}")
    row = tuple(_encode_value(column, record.get(column.name), where) for column in COLUMNS)
    values = dict(zip(COLUMN_NAMES, row))
    if (values["status"] == "failed") != (values["failure_code"] is not None):
        raise ValueError(f"{where}: a failed child needs a failure_code, and only a failed child has one"
                         if values["status"] == "failed" else
                         f"{where}: only a failed child has a failure_code, not one with status {values['status']!r}")
    if values["status"] == "ok":
        lacking = [name for name in ("accuracy", "latency_ms") if values[name] is None]
        if lacking:
            raise ValueError(f"{where}: an 'ok' child needs {' and '.join(lacking)} (NaN counts as missing); "
                             "record it as 'failed' with a reason instead")
    return row


def _decode_json(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.loads(value) if isinstance(value, str) else value


def _decode_row(row: Iterable) -> dict:
    record = dict(zip(COLUMN_NAMES, row))
    for name in JSON_COLUMNS:
        record[name] = _decode_json(record[name])
    return record


def _frame(records: list[dict]) -> pd.DataFrame:
    """A DataFrame of decoded child records with one fixed dtype per column, empty or not."""
    data = {}
    for column in COLUMNS:
        values = [record.get(column.name) for record in records]
        data[column.name] = pd.Series(values, dtype=_PANDAS_DTYPES.get(column.kind, _TEXT_DTYPE))
    return pd.DataFrame(data, columns=list(COLUMN_NAMES))


def _check_status(status: str | None) -> str | None:
    if status is None or status == "all":
        return None
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)} or 'all', got {status!r}")
    return status


# ---------------------------------------------------------------------------------------------------------------
# Export.


# Parquet keeps the structured columns typed, as children() gives them: indices a list<int64>, latencies a
# map<string, double> ({source: ms}; a map because the sources vary by run). extra (any JSON object) stays JSON
# text, as every column of a CSV export does.
_ARROW_COLUMNS = ("indices", "latencies")


def _write_parquet(frame: pd.DataFrame, path: str) -> None:
    import pyarrow as pa

    types = {"indices": pa.list_(pa.int64()), "latencies": pa.map_(pa.string(), pa.float64())}
    typed = [name for name in _ARROW_COLUMNS if name in frame.columns]
    schema = pa.Schema.from_pandas(frame.assign(**{name: None for name in typed}), preserve_index=False)
    for name in typed:
        schema = schema.set(schema.get_field_index(name), pa.field(name, types[name]))
    frame.to_parquet(path, index=False, schema=schema)


def _write_csv(frame: pd.DataFrame, path: str) -> None:
    frame.to_csv(path, index=False)


_WRITERS: dict[str, Callable[[pd.DataFrame, str], None]] = {".parquet": _write_parquet, ".csv": _write_csv}


def check_export_path(path: str | os.PathLike) -> str:
    """The export format of `path` ('.parquet' or '.csv'), or ValueError saying why it cannot be written to.

    Callers check before doing any work, so a typo in a file name fails fast instead of after a long read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITERS:
        shown = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise ValueError(f"cannot export to {path}: unknown format ({shown}); use .parquet or .csv")
    if path.is_dir():
        raise ValueError(f"cannot export to {path}: it is a directory")
    if not path.parent.is_dir():
        raise ValueError(f"cannot export to {path}: directory {path.parent} does not exist")
    return suffix


def export_frame(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Writes `frame` to .parquet or .csv (chosen by the suffix), atomically.

    The file is written under a temporary name in the same directory and moved into place with os.replace, so a
    reader (or a crash) sees the old file or the whole new one, never a partial one. In Parquet, indices and
    latencies are Arrow list and map columns (pandas reads them as arrays and (source, ms) pairs); extra, and in
    CSV all three, are JSON text -- portable to any reader. read_export() gives back what children() gave.
    """
    path = Path(path)
    suffix = check_export_path(path)
    flat = frame.copy()
    for name in JSON_COLUMNS:
        if name in flat.columns and not (suffix == ".parquet" and name in _ARROW_COLUMNS):
            flat[name] = pd.Series([value if value is None or isinstance(value, str) else _dumps(value)
                                    for value in flat[name]], index=flat.index, dtype=object)
    buffer = io.BytesIO()  # written whole, then through the project's one atomic writer (which sets the mode)
    _WRITERS[suffix](flat, buffer)
    atomic_write(path, buffer.getvalue())
    return path


def read_export(path: str | os.PathLike) -> pd.DataFrame:
    """Reads a file written by export_frame() back into the frame children() gives (JSON decoded, same dtypes).

    CSV cannot tell an empty string from a missing value: both come back missing. Parquet is exact.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITERS:
        raise ValueError(f"cannot read {path}: unknown format ('{path.suffix}'); expected .parquet or .csv")
    kinds = {column.name: column.kind for column in COLUMNS}
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        dtypes = {name: ("Int64" if kind == "int" else "float64" if kind == "real" else _TEXT_DTYPE)
                  for name, kind in kinds.items()}
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""], float_precision="round_trip")
    for name in frame.columns:
        kind = kinds.get(name)
        if name == "indices" and suffix == ".parquet":
            frame[name] = pd.Series([None if value is None else [int(item) for item in value]
                                     for value in frame[name]], index=frame.index, dtype=object)
        elif name == "latencies" and suffix == ".parquet":
            frame[name] = pd.Series([None if value is None else {str(key): float(ms) for key, ms in value}
                                     for value in frame[name]], index=frame.index, dtype=object)
        elif name in JSON_COLUMNS:
            frame[name] = pd.Series([_decode_json(value) for value in frame[name]], index=frame.index, dtype=object)
        elif kind is not None:
            frame[name] = frame[name].astype(_PANDAS_DTYPES.get(kind, _TEXT_DTYPE))
    return frame


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
                         [("schema_version", _dumps(SCHEMA_VERSION)), ("created_at", _dumps(utc_now()))])

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
        """Brings a store of an older schema version up to date, in one transaction."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (_dumps(SCHEMA_VERSION),))
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
            text = _dumps(value)
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
        return _decode_row(rows[0]) if rows else None

    def count(self, status: str | None = None) -> int:
        """Number of children, of one status if given ('all' or None: every child)."""
        status = _check_status(status)
        if status is None:
            return self._read("SELECT COUNT(*) FROM children")[0][0]
        return self._read("SELECT COUNT(*) FROM children WHERE status = ?", (status,))[0][0]

    def records(self, status: str | None = None) -> list[dict]:
        """The children as plain dicts, in the order they were stored -- for callers that want no pandas."""
        status = _check_status(status)
        if status is None:
            rows = self._read(f"{self._select} ORDER BY rowid")
        else:
            rows = self._read(f"{self._select} WHERE status = ? ORDER BY rowid", (status,))
        return [_decode_row(row) for row in rows]

    def children(self, status: str | None = None) -> pd.DataFrame:
        """The children as a DataFrame, in the order they were stored (completion order; `sample` gives the
        order they were proposed). Columns are COLUMN_NAMES; indices, latencies and extra hold decoded lists and
        dicts; integers are nullable Int64, times stay ISO-8601 strings."""
        return _frame(self.records(status))

    def top(self, k: int, by: str = "reward", status: str | None = "ok") -> pd.DataFrame:
        """The k best children by one numeric column: highest first, except for costs (latency, params,
        madds, seconds), lowest first. Children missing that value are left out; ties keep storage order."""
        if not _is_int(k) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if by not in _NUMERIC:
            raise ValueError(f"cannot rank by {by!r}: use one of {', '.join(_NUMERIC)}")
        status = _check_status(status)
        order = "ASC" if by in LOWER_IS_BETTER else "DESC"
        where = f"{by} IS NOT NULL" + (" AND status = ?" if status else "")
        rows = self._read(f"{self._select} WHERE {where} ORDER BY {by} {order}, rowid LIMIT ?",
                          ((status,) if status else ()) + (int(k),))
        return _frame([_decode_row(row) for row in rows])

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
        if not _is_int(step) or step < 0:
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
            text = _dumps(stats)
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
