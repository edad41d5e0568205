"""One process owns a run folder at a time: an OS lock on `RUN_DIR/.lock`.

Two searches writing one folder would interleave their children and sample numbers, and a `--resume` started
beside a live search would evaluate its children in flight a second time. `flock` is held by the open file, so
the kernel releases it whenever the owner exits, SIGKILL and power loss included: a stale lock never needs
cleaning up. The file keeps the owner's PID for the message the next process prints; it is never deleted
(deleting a lock file lets a third process lock a new file while the second still holds the old one).

Pure standard library (POSIX `fcntl`); on a file system without `flock` support the lock is refused with a message.
"""

from __future__ import annotations

import errno
import fcntl
import os

LOCK_FILE = ".lock"


class RunInUse(ValueError):
    """Another live process owns the run folder."""


class RunLock:
    """An exclusive, non-blocking lock on a run folder; use as a context manager or call acquire()/release()."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Takes the lock (the folder must exist); RunInUse naming the owner's PID if another process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"cannot take the run folder {self.run_dir}: {err.strerror} ({self.path}); a search "
                             "needs to write its folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = _read_pid(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunInUse(f"{self.run_dir} is in use by process {owner or '(unknown)'}: one search owns a "
                               "run folder at a time; wait for it to end (or stop it), then --resume") from None
            raise ValueError(f"cannot lock {self.path}: {err.strerror} (run folders need a local file system "
                             "with flock)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)       # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def other_owner(run_dir: str) -> int | None:
    """The PID of another live process that owns `run_dir` (0 if unknown), or None: nobody, or this process.

    Only looks: a shared lock taken and dropped at once. For whoever must not change a folder under a live search
    without owning it (the store's schema migration)."""
    try:
        fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None                  # never locked, or not ours to read: no search of this version runs there
    try:
        owner = _read_pid(fd)
        if owner == os.getpid():
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return owner or 0
        return None
    finally:
        os.close(fd)             # drops the shared lock with it


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
