"""Architectures as data and their block-string grammar.

Pure Python: importing this module pulls in neither TensorFlow nor Ray (a test enforces it).


Block strings
-------------
The official MnasNet grammar (tensorflow/tpu, ``mnasnet_models.py``) writes one block a string::

    r3_k5_s22_e3_i24_o40_se0.25

``r`` repeats, ``k`` kernel, ``s`` strides of the first repeat (two digits), ``e`` expansion ratio, ``i``/``o``
input and output filters, ``se`` squeeze-excite ratio (of the block's *input* filters), ``noskip`` turns the
identity residual off. An ``e1`` block is a depthwise-separable conv (no expansion conv).

The MnasNet paper's space has two things the release cannot write; we add one flag token for each, so every
released string still decodes to the same model:

* ``conv``     -- the layer is a regular k x k convolution (conv, BN, ReLU) instead of an (inverted) bottleneck.
                 It has no expansion, so it must say ``e1``.
* ``poolskip`` -- a residual on every layer: identity where the shapes allow it, otherwise an average pool with
                 the layer's stride (and a 1x1 conv + BN when the filters change) on the shortcut.

Tokens may come in any order on input; the encoder writes the canonical order
``r k s e i o [se] [noskip|poolskip] [conv]``.

One grammar for block strings and search spaces: a kernel is odd (a 'same' convolution needs a centre tap), a
stride is one digit 1-9 (``s22``: the two digits are the strides of the two axes), a block has at most
`MAX_REPEATS` layers and no size exceeds `MAX_SIZE`. `Block` enforces it, so every block that exists -- parsed,
built by hand or decoded from a space -- encodes to a string that parses back to it; a space is checked option by
option when it is loaded.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

SKIP_NONE, SKIP_IDENTITY, SKIP_POOL = "none", "identity", "pool"
SKIPS = (SKIP_NONE, SKIP_IDENTITY, SKIP_POOL)
CONV_MBCONV, CONV_REGULAR = "mbconv", "conv"

# Searchable conv ops by name, as (conv kind, expansion ratio). `mbconvN` for any N is accepted too.
CONV_OPS: dict[str, tuple[str, int]] = {
    "conv": (CONV_REGULAR, 1),
    "dsconv": (CONV_MBCONV, 1),
    "mbconv3": (CONV_MBCONV, 3),
    "mbconv6": (CONV_MBCONV, 6),
}

_TOKEN = re.compile(r"^([a-z]+)(\d.*)$")
_FLAGS = {"noskip", "poolskip", "conv"}
_INT_KEYS = {"r": "repeats", "k": "kernel", "e": "expand_ratio", "i": "input_filters", "o": "output_filters"}

MAX_REPEATS = 100
"""Layers of one block. MnasNet's have 1-4; counting parameters walks every layer, so a block of a trillion
layers would hang `describe` and the controller loop instead of failing."""
MAX_SIZE = 2 ** 31 - 1
"""Kernels, expansion ratios, filters, resolutions: TensorFlow's shapes are 32-bit."""
MAX_DEPTH_MULTIPLIER = 10.0
"""Width multipliers in the literature run from 0.35 to 2; beyond 10 the filter counts leave any phone behind
(and beyond ~1e300 they leave floating point)."""
ECHO_LIMIT = 60


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)` cut to about `limit` characters: an error names the bad input without copying megabytes."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _size_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be the integer field `name` of a block or architecture, or None if it can."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a positive integer"
    if name == "repeats" and value > MAX_REPEATS:
        return f"must be at most {MAX_REPEATS}"
    if value > MAX_SIZE:
        return f"must be at most {MAX_SIZE} (2^31 - 1)"
    if name == "kernel" and value % 2 == 0:
        return "must be odd (a 'same' convolution needs a centre tap)"
    return None


def round_filters(filters: float, multiplier: float = 1.0, divisor: int = 8, min_depth: int | None = None) -> int:
    """Scales `filters` by `multiplier` and rounds to a multiple of `divisor`.

    The official MnasNet rule: round to the nearest multiple, but never go down by more than 10%.
    """
    min_depth = min_depth or divisor
    scaled = filters * multiplier
    rounded = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


@dataclasses.dataclass(frozen=True)
class Block:
    """One block: a layer repeated `repeats` times; only the first repeat strides and changes filters."""

    repeats: int
    kernel: int
    strides: tuple[int, int]
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float = 0.0
    skip: str = SKIP_IDENTITY
    conv: str = CONV_MBCONV

    def __post_init__(self):
        for name in ("repeats", "kernel", "expand_ratio", "input_filters", "output_filters"):
            problem = _size_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"block field {name!r} {problem}, got {echo(getattr(self, name))}")
        if (not isinstance(self.strides, (tuple, list)) or len(self.strides) != 2
                or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 9 for s in self.strides)):
            raise ValueError(f"block strides must be two integers from 1 to 9 (one digit each in a block string), "
                             f"got {echo(self.strides)}")
        if (isinstance(self.se_ratio, bool) or not isinstance(self.se_ratio, (int, float))
                or not 0.0 <= self.se_ratio <= 1.0):
            raise ValueError(f"squeeze-excite ratio must be in [0, 1], got {echo(self.se_ratio)}")
        if self.skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {self.skip!r}")
        if self.conv not in (CONV_MBCONV, CONV_REGULAR):
            raise ValueError(f"conv must be 'mbconv' or 'conv', got {self.conv!r}")
        if self.conv == CONV_REGULAR and self.expand_ratio != 1:
            raise ValueError("a regular conv block has no expansion: write e1 with 'conv'")
        object.__setattr__(self, "strides", tuple(self.strides))
        object.__setattr__(self, "se_ratio", float(self.se_ratio))

    @property
    def op(self) -> str:
        """The paper's name of the conv op: conv, dsconv or mbconvN."""
        if self.conv == CONV_REGULAR:
            return "conv"
        return "dsconv" if self.expand_ratio == 1 else f"mbconv{self.expand_ratio}"

    @property
    def stride(self) -> int:
        return max(self.strides)

    def replace(self, **changes) -> "Block":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return encode_block(self)


def decode_block(block_string: str) -> Block:
    """Parses one block string. Raises ValueError naming the bad token."""
    if not isinstance(block_string, str) or not block_string.strip():
        raise ValueError(f"empty block string: {echo(block_string)}")
    text = block_string.strip()
    shown = echo(text)
    options: dict[str, str] = {}
    flags: set[str] = set()
    for token in text.split("_"):
        if token in _FLAGS:
            if token in flags:
                raise ValueError(f"block string {shown}: token {token!r} given twice")
            flags.add(token)
            continue
        match = _TOKEN.match(token)
        if not match or match.group(1) not in ("r", "k", "s", "e", "i", "o", "se"):
            raise ValueError(f"block string {shown}: unknown token {echo(token)} "
                             "(expected r, k, s, e, i, o, se, noskip, poolskip or conv)")
        key, value = match.groups()
        if key in options:
            raise ValueError(f"block string {shown}: token {key!r} given twice")
        options[key] = value
    missing = [k for k in ("r", "k", "s", "e", "i", "o") if k not in options]
    if missing:
        raise ValueError(f"block string {shown}: missing token(s) {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, name in _INT_KEYS.items():
        digits = options[key]
        # ASCII digits only ('²'.isdigit() is true), and no more than a valid size has: int() of a megabyte of
        # digits is slow, and Python refuses it anyway
        value = int(digits) if re.fullmatch(r"[0-9]{1,12}", digits) else 0
        problem = _size_problem(name, value) if value else "must be a positive integer"
        if problem:
            raise ValueError(f"block string {shown}: bad token {echo(key + digits)} ({name} {problem})")
        values[key] = value
    strides = options["s"]
    if not re.fullmatch(r"[1-9]{2}", strides):
        raise ValueError(f"block string {shown}: bad token {echo('s' + strides)} "
                         "(strides are two digits 1-9, e.g. s22)")
    se_ratio = 0.0
    if "se" in options:
        try:
            se_ratio = float(options["se"])
        except ValueError:
            se_ratio = -1.0
        if not 0.0 < se_ratio <= 1.0:
            raise ValueError(f"block string {shown}: bad token {echo('se' + options['se'])} (ratio in (0, 1])")
    if "noskip" in flags and "poolskip" in flags:
        raise ValueError(f"block string {shown}: 'noskip' and 'poolskip' exclude each other")
    skip = SKIP_NONE if "noskip" in flags else SKIP_POOL if "poolskip" in flags else SKIP_IDENTITY
    conv = CONV_REGULAR if "conv" in flags else CONV_MBCONV
    if conv == CONV_REGULAR and values["e"] != 1:
        raise ValueError(f"block string {shown}: token 'e{values['e']}' with 'conv' (a regular conv needs e1)")
    return Block(repeats=values["r"], kernel=values["k"], strides=(int(strides[0]), int(strides[1])),
                 expand_ratio=values["e"], input_filters=values["i"], output_filters=values["o"],
                 se_ratio=se_ratio, skip=skip, conv=conv)


def encode_block(block: Block) -> str:
    """Writes a block in the canonical block-string form; `decode_block(encode_block(b)) == b`."""
    parts = [f"r{block.repeats}", f"k{block.kernel}", f"s{block.strides[0]}{block.strides[1]}",
             f"e{block.expand_ratio}", f"i{block.input_filters}", f"o{block.output_filters}"]
    if block.se_ratio > 0:
        parts.append(f"se{block.se_ratio!r}")
    if block.skip == SKIP_NONE:
        parts.append("noskip")
    elif block.skip == SKIP_POOL:
        parts.append("poolskip")
    if block.conv == CONV_REGULAR:
        parts.append("conv")
    return "_".join(parts)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A whole network: stem, blocks, head, and how it is run (resolution, width multiplier, dropout).

    Blocks hold the *unscaled* filters of the block strings; `scaled_blocks()` applies the depth multiplier
    with the official rounding. The 1280-filter head is never scaled (as in the official MnasNet).
    """

    blocks: tuple[Block, ...]
    stem_filters: int = 32
    head_filters: int = 1280
    resolution: int = 224
    depth_multiplier: float = 1.0
    dropout: float = 0.2
    stem_stride: int = 2

    def __post_init__(self):
        blocks = tuple(decode_block(b) if isinstance(b, str) else b for b in self.blocks)
        if not blocks:
            raise ValueError("an architecture needs at least one block")
        object.__setattr__(self, "blocks", blocks)
        for name in ("depth_multiplier", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"architecture field {name!r} must be a number, got {echo(value)}")
            object.__setattr__(self, name, float(value))
        for name in ("stem_filters", "head_filters", "resolution", "stem_stride"):
            problem = _size_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"architecture field {name!r} {problem}, got {echo(getattr(self, name))}")
        if not 0 < self.depth_multiplier <= MAX_DEPTH_MULTIPLIER:  # NaN fails this too
            raise ValueError(f"depth multiplier must be positive and at most {MAX_DEPTH_MULTIPLIER:g}, "
                             f"got {self.depth_multiplier}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_strings(cls, block_strings: Iterable[str], **fields) -> "Architecture":
        return cls(blocks=tuple(decode_block(s) for s in block_strings), **fields)

    @property
    def block_strings(self) -> tuple[str, ...]:
        return tuple(encode_block(b) for b in self.blocks)

    def replace(self, **changes) -> "Architecture":
        return dataclasses.replace(self, **changes)

    def scaled_stem(self) -> int:
        """Stem filters with the depth multiplier applied (official rounding); unchanged at 1.0, like blocks."""
        if self.depth_multiplier == 1.0:
            return self.stem_filters
        return round_filters(self.stem_filters, self.depth_multiplier)

    def scaled_blocks(self) -> tuple[Block, ...]:
        """Blocks with filters scaled by the depth multiplier (official rounding)."""
        m = self.depth_multiplier
        if m == 1.0:
            return self.blocks
        return tuple(b.replace(input_filters=round_filters(b.input_filters, m),
                               output_filters=round_filters(b.output_filters, m)) for b in self.blocks)

    def to_dict(self) -> dict:
        return {"blocks": list(self.block_strings), "stem_filters": self.stem_filters,
                "head_filters": self.head_filters, "resolution": self.resolution,
                "depth_multiplier": self.depth_multiplier, "dropout": self.dropout,
                "stem_stride": self.stem_stride}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture field(s): {', '.join(unknown)}")
        fields = dict(data)
        fields["blocks"] = tuple(decode_block(s) if isinstance(s, str) else s for s in data.get("blocks", ()))
        return cls(**fields)

    def to_text(self) -> str:
        """The text-file form read by `parse_arch_text`: header lines, then one block string a line."""
        lines = [f"stem: {self.stem_filters}", f"head: {self.head_filters}"]
        defaults = Architecture(blocks=self.blocks)
        for name in ("resolution", "depth_multiplier", "dropout", "stem_stride"):
            if getattr(self, name) != getattr(defaults, name):
                lines.append(f"{name}: {getattr(self, name)}")
        return "\n".join(lines + list(self.block_strings)) + "\n"

    def __str__(self) -> str:
        return " ".join(self.block_strings)


_HEADER_FIELDS = {"stem": ("stem_filters", int), "head": ("head_filters", int), "resolution": ("resolution", int),
                  "depth_multiplier": ("depth_multiplier", float), "dropout": ("dropout", float),
                  "stem_stride": ("stem_stride", int)}


def parse_arch_text(text: str, source: str = "<text>") -> Architecture:
    """Reads an architecture written one block string a line, with optional `stem: N` / `head: N` lines.

    Blank lines and `#` comments are ignored. Errors name the file, the line and the bad token.
    """
    fields: dict[str, Any] = {}
    blocks: list[Block] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" in line:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key not in _HEADER_FIELDS:
                raise ValueError(f"{source}:{number}: unknown setting {echo(key)} "
                                 f"(known: {', '.join(_HEADER_FIELDS)})")
            name, kind = _HEADER_FIELDS[key]
            try:
                fields[name] = kind(value)
            except ValueError:
                raise ValueError(f"{source}:{number}: bad value {echo(value)} for {key!r}") from None
            continue
        for token in line.split():
            try:
                blocks.append(decode_block(token))
            except ValueError as err:
                raise ValueError(f"{source}:{number}: {err}") from None
    if not blocks:
        raise ValueError(f"{source}: no block strings found")
    try:
        return Architecture(blocks=tuple(blocks), **fields)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
