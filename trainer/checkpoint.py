"""A training run's files on disk: its configuration, its last checkpoint, its metrics.

A run directory holds

    config.json      what was trained and how (architecture, dataset, recipe), written before the first step
    checkpoint.npz   the state after the last finished epoch: every model variable (batch-norm statistics and
                     the dropout seed state included), every optimizer variable (its step count, RMSProp's
                     averages and momenta), the weight average's shadows, and the per-epoch history
    metrics.csv      one row per finished epoch (pandas.read_csv), rewritten from that history
    summary.json     the final metrics, once the run ends
    tensorboard/     TensorBoard event files (train/ and eval/)

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over the old one:
a crash at any moment leaves either the previous version or the new one, never half of a file, and only the
last checkpoint is kept. One .npz file rather than a TensorFlow checkpoint: plain arrays in a documented order
restore exactly into a freshly built model and optimizer, and numpy can inspect them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

from mnas.search.fileio import atomic_write, write_json_atomic

CONFIG = "config.json"
CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.csv"
SUMMARY = "summary.json"


def remove_temporaries(folder: str | os.PathLike) -> list[str]:
    """Deletes what writes killed mid-way left in `folder`: atomic_write's temporary files (.tmp-*.part), which
    only a process that was still running could have finished. Returns their names."""
    names = sorted(n for n in os.listdir(folder) if n.startswith(".tmp-") and n.endswith(".part"))
    for name in names:
        try:
            os.unlink(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    return names


def write_json(path: str | os.PathLike, value: Any) -> None:
    """A run's JSON file (config, summary, export report), atomically, sorted and indented for people to read."""
    write_json_atomic(path, value, indent=2, sort_keys=True)


def write_metrics(path: str | os.PathLike, history: Iterable[Mapping[str, Any]]) -> None:
    """The per-epoch history as CSV, columns in the order of the first row."""
    rows = list(history)
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, text.getvalue().encode())


def save_state(path: str | os.PathLike, model_values: list, optimizer_values: list, ema_values: list,
               meta: Mapping[str, Any]) -> None:
    """One checkpoint: three lists of arrays and a JSON-able dict (epoch, step, history, ...)."""
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for prefix, values in (("model", model_values), ("optimizer", optimizer_values), ("ema", ema_values)):
        arrays.update({f"{prefix}/{i:05d}": np.asarray(v) for i, v in enumerate(values)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def load_state(path: str | os.PathLike) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """The arrays of a checkpoint grouped by prefix ('model', 'optimizer', 'ema'), and its meta dict."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            groups: dict[str, list[np.ndarray]] = {"model": [], "optimizer": [], "ema": []}
            for key in sorted(k for k in archive.files if k != "meta"):
                prefix, _, _ = key.partition("/")
                groups.setdefault(prefix, []).append(archive[key])
            meta = json.loads(archive["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from None
    return groups, meta


def assign_all(variables: list, values: list[np.ndarray], what: str, path: str | os.PathLike) -> None:
    """Assigns saved values to variables, refusing a checkpoint made for another model."""
    if len(variables) != len(values):
        raise ValueError(f"{path}: checkpoint holds {len(values)} {what} variables, this model has "
                         f"{len(variables)}: it was written for a different architecture or settings")
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(f"{path}: {what} variable {getattr(variable, 'path', variable.name)} has shape "
                             f"{tuple(variable.shape)}, the checkpoint {tuple(value.shape)}")
    for variable, value in zip(variables, values):
        variable.assign(value)
