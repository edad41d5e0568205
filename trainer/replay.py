"""ARCH on every command line (train, describe, latency): a registry name, a block-string file, inline block
strings, or a child of a search -- `RUN_DIR:RANK` or `RUN_DIR:pareto:I`. `resolve_arch` is the one resolver.

The ranks are the ones the dashboard prints beside each child (results/views.py, `replay_command`):

* `RUN_DIR:RANK` -- the RANK-th (1-based) of the run's 'ok' children by reward, best first, ties in storage
  order: the order of `ResultStore.top(k, by='reward')` and of `launch.py results RUN_DIR --status ok`;
* `RUN_DIR:pareto:I` -- the I-th (1-based) child of the accuracy-latency Pareto front in order of increasing
  latency (`results.pareto.pareto_front`), so `:pareto:1` is the fastest model of the frontier.

A search stores only a child's block strings; the stem, head, dropout and stem stride come from the run's search
space (its config.json), and the resolution from the run's deployment settings, so the replayed architecture is
the one whose latency the search measured.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

from mnas.search.arch import Architecture

_PARETO = re.compile(r"^(?P<run>.+):pareto:(?P<index>[^:]*)$")
_RANK = re.compile(r"^(?P<run>.+):(?P<rank>[^:]*)$")


class Resolved(NamedTuple):
    arch: Architecture
    source: str      # what was resolved, for logs and config.json
    slug: str        # a short name for a default output folder


def _positive(text: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"[0-9]{1,30}", text) or int(text) < 1:  # ASCII digits ('²'.isdigit() is true)
        raise ValueError(f"{spec!r}: {what} must be a positive integer (1 = first), got {text!r}")
    return int(text)


def _run_architecture(run_dir: str, blocks: str) -> Architecture:
    """Block strings of a child completed with the stem/head/dropout/stride of the run's space."""
    from mnas.search.registry import load_space

    fields = {}
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as handle:
                config = json.load(handle)
            space = load_space(config["space"]) if config.get("space") is not None else None
        except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{config_path}: {err}") from None
        if space is not None:
            fields.update(stem_filters=space.stem_filters, head_filters=space.head_filters,
                          dropout=space.dropout, stem_stride=space.stem_stride, resolution=space.resolution)
        resolution = (config.get("deploy") or {}).get("resolution")
        if resolution:
            fields["resolution"] = int(resolution)
    return Architecture.from_strings(blocks.split(), **fields)


def resolve_child(run_dir: str, rank: int | None = None, pareto: int | None = None) -> Architecture:
    """The architecture of one child of a search run, by reward rank or by Pareto position (1-based)."""
    from mnas.results.pareto import pareto_front
    from mnas.results.store import ResultStore

    if not os.path.isdir(run_dir):
        raise ValueError(f"no such run directory: {run_dir}")
    with ResultStore(run_dir, readonly=True) as store:
        if rank is not None:
            # 'ok' children with a reward, as the dashboard ranks them; never more than the run holds (a rank of
            # 23 digits would overflow SQLite's 64-bit LIMIT)
            ranked = store.top(max(1, min(rank, store.count("ok"))), by="reward")
            if rank > len(ranked):
                raise ValueError(f"{run_dir}:{rank}: the run has {len(ranked)} ok children, rank {rank} is out "
                                 "of range")
            row = ranked.iloc[rank - 1]
        else:
            front = pareto_front(store.children())
            if pareto > len(front):
                raise ValueError(f"{run_dir}:pareto:{pareto}: the run's Pareto front has {len(front)} children")
            row = front.iloc[pareto - 1]
    return _run_architecture(run_dir, row["arch"])


def resolve_arch(spec: str) -> Resolved:
    """Resolves any ARCH form; raises ValueError (one line, naming the problem) for anything else."""
    from mnas.search.registry import ARCHITECTURES, load_architecture

    if not spec or not spec.strip():
        raise ValueError("ARCH is empty")
    if not os.path.exists(spec):
        # No registry name or block string holds a colon: the spec names a search's child.
        match = _PARETO.match(spec) or _RANK.match(spec)
        if match:
            run = match.group("run")
            if not os.path.isdir(run):
                raise ValueError(f"no such run directory: {run} ({spec} reads as RUN_DIR:RANK or "
                                 "RUN_DIR:pareto:I)")
            name = os.path.basename(os.path.normpath(run)) or "run"
            if "index" in match.groupdict():
                index = _positive(match.group("index"), "the Pareto index", spec)
                return Resolved(resolve_child(run, pareto=index), spec, f"{name}-pareto{index}")
            rank = _positive(match.group("rank"), "the rank", spec)
            return Resolved(resolve_child(run, rank=rank), spec, f"{name}-rank{rank}")
    arch = load_architecture(spec)
    if spec in ARCHITECTURES:
        slug = spec
    elif os.path.isfile(spec):
        slug = os.path.splitext(os.path.basename(spec))[0]
    else:
        slug = "inline"
    return Resolved(arch, spec, slug)
