"""Factorized hierarchical search spaces: blocks of choices, decisions, and the genotype -> architecture map.

Pure Python: importing this module pulls in neither TensorFlow nor Ray (a test enforces it). Architectures and
their block strings are `search.arch`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Any, Iterable, Mapping, Sequence

from mnas.search.arch import (CONV_MBCONV, CONV_OPS, MAX_REPEATS, MAX_SIZE, SKIPS, Architecture, Block, echo,
                         encode_block, round_filters)


DECISIONS = ("op", "kernel", "se", "skip", "filter_multiplier", "layer_offset")
PAPER_CHOICES: dict[str, list] = {
    "op": ["conv", "dsconv", "mbconv3", "mbconv6"],
    "kernel": [3, 5],
    "se": [0.0, 0.25],
    "skip": ["none", "identity", "pool"],
    "filter_multiplier": [0.75, 1.0, 1.25],
    "layer_offset": [-1, 0, 1],
}


def _op_to_conv(op: str) -> tuple[str, int]:
    if op in CONV_OPS:
        return CONV_OPS[op]
    match = re.fullmatch(r"mbconv([0-9]{1,12})", op)
    if match and int(match.group(1)) >= 1:
        return CONV_MBCONV, int(match.group(1))
    raise ValueError(f"unknown conv op {echo(op)} (known: conv, dsconv, mbconv3, mbconv6, mbconvN)")


@dataclasses.dataclass(frozen=True)
class SpaceBlock:
    """One block of the skeleton: its base filters, layers and stride, and its choice lists."""

    filters: int
    layers: int
    stride: int
    choices: tuple[tuple[str, tuple], ...]  # (decision, options) in DECISIONS order
    input_filters: int | None = None  # declared input filters of the first layer; None: the previous output

    def options(self, decision: str) -> tuple:
        return dict(self.choices)[decision]


@dataclasses.dataclass(frozen=True)
class Decision:
    """One free choice of the space: which block, which decision, and its options."""

    block: int
    name: str
    options: tuple

    def __str__(self) -> str:
        return f"block {self.block + 1} {self.name}"


class SearchSpace:
    """The MnasNet factorized hierarchical search space, defined by data.

    Each block of a fixed skeleton chooses, independently of the others, a conv op, kernel, squeeze-excite ratio,
    skip op, a multiplier of its base filters and an offset to its base number of layers. A choice list with one
    option is fixed and is not a decision. The controller sees only `choice_counts`; a genotype is a flat list of
    indices, one per decision, in block order then in the order of `DECISIONS`.

    Layer offsets never take a block below one layer; filters are rounded like the official width scaling
    (multiples of 8, never down by more than 10%). So two genotypes can decode to the same architecture:
    `size` counts genotypes, `distinct_size()` counts architectures.
    """

    def __init__(self, spec: Mapping[str, Any]):
        spec = dict(spec)
        known = {"name", "description", "stem", "head", "resolution", "dropout", "stem_stride", "choices", "blocks"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"search space: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        self.name = str(spec.get("name", "custom"))
        self.description = str(spec.get("description", ""))
        self.stem_filters = _positive_int(spec.get("stem", 32), "stem")
        self.head_filters = _positive_int(spec.get("head", 1280), "head")
        self.resolution = _positive_int(spec.get("resolution", 224), "resolution")
        self.stem_stride = _positive_int(spec.get("stem_stride", 2), "stem_stride")
        self.dropout = spec.get("dropout", 0.2)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0 <= self.dropout < 1:
            raise ValueError(f"search space: dropout must be a number in [0, 1), got {echo(self.dropout)}")
        self.dropout = float(self.dropout)
        defaults = dict(PAPER_CHOICES)
        defaults.update(_check_choices(spec.get("choices") or {}, "choices"))
        raw_blocks = spec.get("blocks")
        if not isinstance(raw_blocks, list) or not raw_blocks:
            raise ValueError("search space: 'blocks' must be a non-empty list")
        blocks = []
        for number, raw in enumerate(raw_blocks, 1):
            where = f"blocks[{number}]"
            if not isinstance(raw, Mapping):
                raise ValueError(f"search space: {where} must be a mapping, got {echo(raw)}")
            raw = dict(raw)
            for key in ("filters", "layers", "stride"):
                if key not in raw:
                    raise ValueError(f"search space: {where} needs {key!r}")
            choices = dict(defaults)
            choices.update(_check_choices({k: v for k, v in raw.items() if k in DECISIONS}, where))
            extra = sorted(set(raw) - set(DECISIONS) - {"filters", "layers", "stride", "input_filters"})
            if extra:
                raise ValueError(f"search space: {where}: unknown key(s) {', '.join(extra)}")
            declared = raw.get("input_filters")
            block = SpaceBlock(
                filters=_positive_int(raw["filters"], f"{where}.filters"),
                layers=_positive_int(raw["layers"], f"{where}.layers", MAX_REPEATS),
                stride=_positive_int(raw["stride"], f"{where}.stride", 9),
                choices=tuple((d, tuple(choices[d])) for d in DECISIONS),
                input_filters=None if declared is None else _positive_int(declared, f"{where}.input_filters"))
            self._check_options(block, where)
            blocks.append(block)
        self.blocks = tuple(blocks)
        self.decisions = tuple(Decision(i, name, options) for i, block in enumerate(self.blocks)
                               for name, options in block.choices if len(options) > 1)
        self._spec = spec

    # -- the controller's view
    @property
    def choice_counts(self) -> list[int]:
        """Number of options of each decision, in genotype order: all the controller knows of the space."""
        return [len(d.options) for d in self.decisions]

    @property
    def size(self) -> int:
        """Number of genotypes (the product of the choice counts)."""
        return math.prod(self.choice_counts)

    def distinct_size(self) -> int:
        """Number of distinct architectures (genotypes that decode alike counted once), block by block."""
        total = 1
        for i, block in enumerate(self.blocks):
            seen = set()
            grids = [block.options(d) for d in DECISIONS]
            for combo in _product(grids):
                seen.add(self._block_key(block, dict(zip(DECISIONS, combo))))
            total *= len(seen)
        return total

    # -- genotype <-> architecture
    def decode(self, indices: Sequence[int]) -> Architecture:
        """Turns a genotype (one index per decision) into an architecture."""
        indices = list(indices)
        if len(indices) != len(self.decisions):
            raise ValueError(f"genotype contains {len(indices)} choices but the space {self.name!r} "
                             f"has {len(self.decisions)} decisions")
        picks: list[dict[str, Any]] = [{name: options[0] for name, options in b.choices} for b in self.blocks]
        for position, (decision, index) in enumerate(zip(self.decisions, indices)):
            if isinstance(index, bool) or not isinstance(index, int) and not hasattr(index, "__index__"):
                raise ValueError(f"choice {position} ({decision}) must be an integer, got {index!r}")
            index = int(index)
            if not 0 <= index < len(decision.options):
                raise ValueError(f"choice {position} ({decision}) is {index} but has only "
                                 f"{len(decision.options)} options")
            picks[decision.block][decision.name] = decision.options[index]
        blocks = []
        previous = self.stem_filters
        for block, pick in zip(self.blocks, picks):
            built = self._make_block(block, pick, previous)
            blocks.append(built)
            previous = built.output_filters
        return Architecture(blocks=tuple(blocks), stem_filters=self.stem_filters, head_filters=self.head_filters,
                            resolution=self.resolution, dropout=self.dropout, stem_stride=self.stem_stride)

    def encode(self, arch: Architecture) -> list[int]:
        """The genotype of `arch`; ValueError naming the first block and choice that the space lacks."""
        if len(arch.blocks) != len(self.blocks):
            raise ValueError(f"architecture has {len(arch.blocks)} blocks but the space {self.name!r} "
                             f"has {len(self.blocks)}")
        if (arch.stem_filters, arch.head_filters, arch.stem_stride) != (
                self.stem_filters, self.head_filters, self.stem_stride):
            raise ValueError(f"architecture stem/head ({arch.stem_filters}/{arch.head_filters}) differ from the "
                             f"space {self.name!r} ({self.stem_filters}/{self.head_filters})")
        chosen: list[dict[str, Any]] = []
        previous = self.stem_filters
        for number, (block, target) in enumerate(zip(self.blocks, arch.blocks), 1):
            pick = self._match(block, target, previous)
            if isinstance(pick, str):
                raise ValueError(f"block {number} {encode_block(target)!r} is not in the space {self.name!r}: "
                                 f"{pick}")
            chosen.append(pick)
            previous = target.output_filters
        return [d.options.index(chosen[d.block][d.name]) for d in self.decisions]

    def contains(self, arch: Architecture) -> bool:
        try:
            self.encode(arch)
        except ValueError:
            return False
        return True

    def sample_indices(self, rng: random.Random) -> list[int]:
        return [rng.randrange(n) for n in self.choice_counts]

    def sample(self, seed: int | random.Random | None = None) -> Architecture:
        """A uniformly random architecture (uniform over genotypes)."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        return self.decode(self.sample_indices(rng))

    def to_dict(self) -> dict:
        return dict(self._spec)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, blocks={len(self.blocks)}, decisions={len(self.decisions)})"

    # -- internals
    def _check_options(self, block: SpaceBlock, where: str) -> None:
        """Every option of `block` builds a valid `Block` (so decoding never fails mid-search, and every child
        writes a block string that parses back): each option is tried with the block's other first options."""
        first = {name: options[0] for name, options in block.choices}
        for name, options in block.choices:
            for option in options:
                try:
                    self._make_block(block, {**first, name: option}, self.stem_filters)
                except ValueError as err:
                    raise ValueError(f"search space: {where}.{name}: option {echo(option)} makes a block that "
                                     f"cannot be: {err}") from None

    def _make_block(self, block: SpaceBlock, pick: Mapping[str, Any], previous: int) -> Block:
        conv, expand = _op_to_conv(pick["op"])
        return Block(repeats=max(1, block.layers + int(pick["layer_offset"])), kernel=int(pick["kernel"]),
                     strides=(block.stride, block.stride), expand_ratio=expand,
                     input_filters=block.input_filters or previous,
                     output_filters=round_filters(block.filters, float(pick["filter_multiplier"])),
                     se_ratio=float(pick["se"]), skip=pick["skip"], conv=conv)

    def _block_key(self, block: SpaceBlock, pick: Mapping[str, Any]) -> tuple:
        conv, expand = _op_to_conv(pick["op"])
        return (conv, expand, pick["kernel"], float(pick["se"]), pick["skip"],
                round_filters(block.filters, float(pick["filter_multiplier"])),
                max(1, block.layers + int(pick["layer_offset"])))

    def _match(self, block: SpaceBlock, target: Block, previous: int) -> dict[str, Any] | str:
        """The choices that rebuild `target` in this block, or a sentence saying why none does."""
        expected_in = block.input_filters or previous
        if target.strides != (block.stride, block.stride):
            return f"strides {target.strides} but the skeleton strides by {block.stride}"
        if target.input_filters != expected_in:
            return f"input filters {target.input_filters} but the previous block gives {expected_in}"
        rebuilt = {
            "op": lambda o: _op_to_conv(o) == (target.conv, target.expand_ratio),
            "kernel": lambda k: k == target.kernel,
            "se": lambda s: float(s) == target.se_ratio,
            "skip": lambda s: s == target.skip,
            "filter_multiplier": lambda m: round_filters(block.filters, float(m)) == target.output_filters,
            "layer_offset": lambda d: max(1, block.layers + int(d)) == target.repeats,
        }
        described = {"op": target.op, "kernel": target.kernel, "se": target.se_ratio, "skip": target.skip,
                     "filter_multiplier": target.output_filters, "layer_offset": target.repeats}
        shown = {"filter_multiplier": lambda m: round_filters(block.filters, float(m)),
                 "layer_offset": lambda d: max(1, block.layers + int(d))}
        pick = {}
        for name in DECISIONS:
            options = block.options(name)
            match = next((o for o in options if rebuilt[name](o)), _MISSING)
            if match is _MISSING:
                allowed = [shown[name](o) for o in options] if name in shown else list(options)
                label = {"filter_multiplier": "filters", "layer_offset": "layers"}.get(name, name)
                return f"{label} {described[name]!r} is not among the options {allowed}"
            pick[name] = match
        return pick


_MISSING = object()


def _product(grids: Sequence[Sequence]) -> Iterable[tuple]:
    if not grids:
        yield ()
        return
    for head in grids[0]:
        for tail in _product(grids[1:]):
            yield (head,) + tail


def _positive_int(value: Any, where: str, most: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"search space: {where} must be an integer from 1 to {most}, got {echo(value)}")
    return value


def _check_choices(raw: Mapping[str, Any], where: str) -> dict[str, list]:
    """Validates choice lists so that a bad space file fails when loaded, not mid-search."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"search space: {where} must be a mapping of decision -> list of options")
    out: dict[str, list] = {}
    for name, options in raw.items():
        if name not in DECISIONS:
            raise ValueError(f"search space: {where}: unknown decision {name!r} (known: {', '.join(DECISIONS)})")
        if not isinstance(options, (list, tuple)) or not options:
            raise ValueError(f"search space: {where}.{name} must be a non-empty list, got {echo(options)}")
        if len(set(map(str, options))) != len(options):
            raise ValueError(f"search space: {where}.{name} repeats an option: {echo(list(options))}")
        for option in options:
            _check_option(name, option, f"{where}.{name}")
        out[name] = list(options)
    return out


def _check_option(name: str, option: Any, where: str) -> None:
    bad = False
    if name == "op":
        try:
            _op_to_conv(str(option))
        except ValueError:
            bad = True
    elif name == "kernel":
        bad = isinstance(option, bool) or not isinstance(option, int) or option < 1 or option % 2 == 0
    elif name == "se":
        bad = isinstance(option, bool) or not isinstance(option, (int, float)) or not 0 <= option <= 1
    elif name == "skip":
        bad = not isinstance(option, str) or option not in SKIPS
    elif name == "filter_multiplier":  # finite: inf and NaN pass `> 0` and fail only when a filter is rounded
        bad = isinstance(option, bool) or not isinstance(option, (int, float)) or not 0 < option < math.inf
    elif name == "layer_offset":
        bad = isinstance(option, bool) or not isinstance(option, int) or abs(option) > MAX_REPEATS
    if bad:
        raise ValueError(f"search space: {where}: bad option {echo(option)}")
