"""Why a child failed: one closed set of codes, each with its meaning, and the exception that carries one.

A failed child is data, not a crash: it is stored with a `failure_code` (a `Failure` value) and a free-text
`failure_detail` (the message, a step number, the file and line). Summaries group by the code, so a hundred
children that diverged at a hundred different steps make one line, "100 x nan_loss".

Pure Python: the worker raises `ChildFailed`, the driver and the engine glue record their own codes, the store
checks every code against this list, and the dashboard counts them, without any of them importing another.
"""

from __future__ import annotations

import enum


class Failure(str, enum.Enum):
    """A failure code. The value is what the store holds; `meaning` says what it is for a user."""

    # raised while the worker evaluates the child (workers.trial, workers.proxy)
    NAN_LOSS = "nan_loss"
    BUILD_ERROR = "build_error"
    OOM = "oom"
    DATA_ERROR = "data_error"
    TRAIN_ERROR = "train_error"
    TOO_LARGE = "too_large"
    LATENCY_ERROR = "latency_error"
    UNEXPECTED_ERROR = "unexpected_error"
    # seen by the engine (search.tune): the worker gave no report
    WORKER_ERROR = "worker_error"
    NO_RESULT = "no_result"
    # found by the driver (search.driver) in what the worker reported
    BAD_RESULT = "bad_result"
    NO_LATENCY = "no_latency"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    def __str__(self) -> str:
        return self.value


_MEANINGS = {
    Failure.NAN_LOSS: "the training loss became NaN or infinite (the child diverged)",
    Failure.BUILD_ERROR: "the architecture could not be built as a Keras model at the proxy's image size",
    Failure.OOM: "training or evaluation ran out of memory",
    Failure.DATA_ERROR: "the proxy dataset could not be loaded (missing package or corrupt files)",
    Failure.TRAIN_ERROR: "any other error raised by Keras while training or evaluating",
    Failure.TOO_LARGE: "the deployment model exceeds limits.max_params; rejected before anything is built",
    Failure.LATENCY_ERROR: "the latency model could not measure or predict the deployment architecture",
    Failure.UNEXPECTED_ERROR: "an exception the worker did not expect (a bug: the detail names the file and line)",
    Failure.WORKER_ERROR: "the trial raised or its worker process died (see the Tune trial's error.txt)",
    Failure.NO_RESULT: "the trial ended without reporting",
    Failure.BAD_RESULT: "the worker reported numbers the reward cannot use (NaN, out of range, missing)",
    Failure.NO_LATENCY: "the worker reported no measurement for the reward's latency backend",
}

CODES: tuple[str, ...] = tuple(code.value for code in Failure)
DETAIL_LIMIT = 500
# Codes stores of schema version 1-2 wrote as the prefix of their free-text reason, under another name.
_RENAMED = {"error": Failure.UNEXPECTED_ERROR}


def failure(code: "Failure | str") -> Failure:
    """The `Failure` of a code or its value; ValueError naming the known codes otherwise."""
    try:
        return Failure(code)
    except ValueError:
        raise ValueError(f"unknown failure code {code!r} (known: {', '.join(CODES)})") from None


def detail(text: object) -> str:
    """A failure detail as stored: text, at most DETAIL_LIMIT characters."""
    return str(text)[:DETAIL_LIMIT]


def split_reason(reason: str | None) -> tuple[str | None, str | None]:
    """(code, detail) of a free-text reason 'code: message' as stores before schema version 3 held it.

    A reason that starts with no known code keeps its whole text as the detail, under `unexpected_error`.
    """
    if reason is None:
        return None, None
    head, sep, rest = reason.partition(":")
    head = head.strip()
    known = _RENAMED.get(head) or (Failure(head) if head in CODES else None)
    if known is None:
        return Failure.UNEXPECTED_ERROR.value, detail(reason.strip())
    return known.value, detail(rest.strip()) if sep else ""


class ChildFailed(Exception):
    """A child that could not be scored: its `code` (a `Failure`) and a `message` for the detail."""

    def __init__(self, code: "Failure | str", message: str = ""):
        self.code = failure(code)
        self.message = message
        super().__init__(f"{self.code.value}: {message}" if message else self.code.value)

    def __reduce__(self):  # Ray ships exceptions between processes by pickling them
        return (type(self), (self.code.value, self.message))
