"""Settings as dataclass fields that say what they accept: one definition gives the default, the check with its
one-line error, the documentation and, for some, the command-line flag.

    samples: int = setting(40, POSITIVE_INT, flag="--samples", help="children to evaluate in all")

`validate(obj, where)` checks every field of a settings dataclass and raises ValueError naming the field path
(`proxy config: batch_size must be a positive integer, got 0`); `from_mapping(cls, data, where)` refuses unknown
keys, naming the known ones; `add_flags` and `apply_flags` derive command-line overrides from the same fields, so
a new setting with a flag needs no hand-written mapping. Checks that tie fields together (batch size against
the subset) stay in the dataclass's own `__post_init__`, after `validate`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from mnas.search.arch import echo


@dataclasses.dataclass(frozen=True)
class Check:
    """What a setting accepts: `accepts(value)` and, for the error, what it must be."""

    accepts: Callable[[Any], bool]
    must_be: str
    options: tuple[str, ...] | None = None     # a closed set of names (the command line offers them as choices)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


INT = Check(_integer, "an integer")
POSITIVE_INT = Check(lambda v: _integer(v) and v >= 1, "a positive integer")
OPTIONAL_POSITIVE_INT = Check(lambda v: v is None or (_integer(v) and v >= 1), "a positive integer or null")
NONNEGATIVE_INT = Check(lambda v: _integer(v) and v >= 0, "an integer >= 0")
POSITIVE_NUMBER = Check(lambda v: _number(v) and 0 < v < math.inf, "a positive number")
OPTIONAL_POSITIVE_NUMBER = Check(lambda v: v is None or (_number(v) and 0 < v < math.inf),
                                 "a positive number or null")
NONNEGATIVE_NUMBER = Check(lambda v: _number(v) and 0 <= v < math.inf, "a finite number >= 0")
FRACTION = Check(lambda v: _number(v) and 0 <= v < 1, "in [0, 1)")
BOOL = Check(lambda v: isinstance(v, bool), "true or false")
NAME = Check(lambda v: isinstance(v, str) and bool(v.strip()), "a name")
OPTIONAL_PATH = Check(lambda v: v is None or (isinstance(v, str) and bool(v)), "a folder's path or null")
PATH = Check(lambda v: isinstance(v, str) and bool(v), "a file's path")


def one_of(options: Sequence[str], what: str = "") -> Check:
    """A name among `options`; the error lists them."""
    known = ", ".join(options)
    return Check(lambda v: isinstance(v, str) and v in options, f"one of {known}" + (f" ({what})" if what else ""),
                 tuple(options))


def setting(default: Any = dataclasses.MISSING, check: Check | None = None, *, factory: Callable[[], Any] | None = None,
            flag: str | None = None, help: str | None = None):  # noqa: A002 -- argparse's word
    """A dataclass field carrying its check and, optionally, its command-line flag and help."""
    metadata = {"check": check, "flag": flag, "help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def validate(obj: Any, where: str, section: bool = False) -> None:
    """Checks every field of `obj` that has a check; ValueError '<where>: <field> must be ..., got ...', or for a
    section of a config file (`section=True`) '<where>.<field> must be ...', the field's path in the file."""
    for field in dataclasses.fields(obj):
        check = field.metadata.get("check")
        value = getattr(obj, field.name)
        if check is not None and not check.accepts(value):
            path = f"{where}.{field.name}" if section else f"{where}: {field.name}"
            raise ValueError(f"{path} must be {check.must_be}, got {echo(value)}")


def from_mapping(cls, data: Mapping[str, Any] | None, where: str):
    """`cls(**data)` after refusing keys it does not have (one line naming them and the known ones)."""
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"{where}: must be a mapping of settings, got {echo(data)}")
    data = dict(data or {})
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted((key for key in data if key not in known), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))} (known: {', '.join(known)})")
    return cls(**data)


def add_flags(parser, cls) -> None:
    """An argparse option for each field of `cls` that names a flag; its type and choices follow the check."""
    for field in dataclasses.fields(cls):
        flag = field.metadata.get("flag")
        if flag:
            check = field.metadata.get("check")
            kind = (int if check in (INT, POSITIVE_INT, NONNEGATIVE_INT) else
                    float if check in (POSITIVE_NUMBER, NONNEGATIVE_NUMBER) else str)
            parser.add_argument(flag, dest=field.name, type=kind, default=None, help=field.metadata.get("help"),
                                choices=check.options if check is not None else None)


def apply_flags(config, args, cls) -> None:
    """Sets each flagged field of `config` that the command line gave (None means not given)."""
    for field in dataclasses.fields(cls):
        if field.metadata.get("flag") and getattr(args, field.name, None) is not None:
            setattr(config, field.name, getattr(args, field.name))
