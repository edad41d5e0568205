"""The children table's schema: its columns and what each may hold, and the checking, encoding and decoding of
one child record. Pure Python and pandas: the store (`results.store`) and the exports (`results.export`) share it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import pandas as pd

from mnas.search.failures import CODES

STATUSES = ("ok", "failed", "pruned")

# pandas 3 has a real string dtype with NaN as its missing value; pandas 2's "str" would turn None into 'None'.
TEXT_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


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

PANDAS_DTYPES = {"int": "Int64", "real": "float64", "indices": object, "latencies": object, "extra": object}
NUMERIC = tuple(column.name for column in COLUMNS if column.kind in ("int", "real"))




def _json_default(value):
    # numpy scalars and arrays (no numpy import needed); anything else is not JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def canonical_json(value) -> str:
    """Canonical JSON, so that the same content always gives the same text (idempotent re-adds compare text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def is_int(value) -> bool:
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
        if not is_int(value):
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
        bad = [item for item in items if not is_int(item)]
        if bad:
            raise ValueError(f"{where}: field 'indices' must hold integers only, got {bad[0]!r}")
        return canonical_json([int(item) for item in items])
    if kind == "latencies":
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: field 'latencies' must be a mapping {{source: ms}}, got {value!r}")
        clean = {}
        for source, ms in value.items():
            if not isinstance(source, str) or not (ms is None or _is_real(ms)):
                raise ValueError(f"{where}: field 'latencies' must map source names to milliseconds, "
                                 f"got {source!r}: {ms!r}")
            clean[source] = None if ms is None else _real(ms)
        return canonical_json(clean)
    if kind == "extra":
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise ValueError(f"{where}: field 'extra' must be a mapping with string keys, got {value!r}")
        try:
            return canonical_json(dict(value))
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


def decode_json(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.loads(value) if isinstance(value, str) else value


def decode_row(row: Iterable) -> dict:
    record = dict(zip(COLUMN_NAMES, row))
    for name in JSON_COLUMNS:
        record[name] = decode_json(record[name])
    return record


def children_frame(records: list[dict]) -> pd.DataFrame:
    """A DataFrame of decoded child records with one fixed dtype per column, empty or not."""
    data = {}
    for column in COLUMNS:
        values = [record.get(column.name) for record in records]
        data[column.name] = pd.Series(values, dtype=PANDAS_DTYPES.get(column.kind, TEXT_DTYPE))
    return pd.DataFrame(data, columns=list(COLUMN_NAMES))


def check_status(status: str | None) -> str | None:
    if status is None or status == "all":
        return None
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)} or 'all', got {status!r}")
    return status
