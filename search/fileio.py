"""Atomic file writes: the one way this project puts results, state and caches on disk.

A file is written to a temporary name beside its destination, flushed to disk, made as readable as any file the
user creates (mkstemp's 0600 would hide a run from other users), then renamed into place: a reader, or a run
resumed after a crash, sees the old file or the new one, never half of one. Pure standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes, before_replace: Callable[[], None] | None = None) -> None:
    """Writes `data` to `path` atomically. `before_replace` runs between the write and the rename (tests use it
    to kill the process at that moment)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=directory)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any, default: Callable[[Any], Any] | None = None,
                      indent: int | None = None, sort_keys: bool = False,
                      before_replace: Callable[[], None] | None = None) -> None:
    """JSON through `atomic_write`."""
    text = json.dumps(data, default=default, indent=indent, sort_keys=sort_keys)
    atomic_write(path, (text + "\n").encode("utf-8"), before_replace)


def read_json(path: str | os.PathLike, object_hook: Callable[[dict], Any] | None = None) -> Any:
    """A JSON file's content; ValueError in one line when it is missing, unreadable or not JSON."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle, object_hook=object_hook)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
