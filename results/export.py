"""Children to files and back: Parquet (typed) and CSV, written atomically, read back into the frame the store
gives (`ResultStore.children()`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import pandas as pd

from mnas.results.schema import COLUMNS, JSON_COLUMNS, PANDAS_DTYPES, TEXT_DTYPE, canonical_json, decode_json
from mnas.search.fileio import atomic_write



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
            flat[name] = pd.Series([value if value is None or isinstance(value, str) else canonical_json(value)
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
        dtypes = {name: ("Int64" if kind == "int" else "float64" if kind == "real" else TEXT_DTYPE)
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
            frame[name] = pd.Series([decode_json(value) for value in frame[name]], index=frame.index, dtype=object)
        elif kind is not None:
            frame[name] = frame[name].astype(PANDAS_DTYPES.get(kind, TEXT_DTYPE))
    return frame
