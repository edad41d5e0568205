"""The MNAS reward: accuracy times a latency term, for one or several latency targets.

Pure Python: importing this module pulls in neither TensorFlow nor Ray (a test enforces it), so the searcher glue
and the results store can score children without building a graph.

The paper (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019, Eq. 2) scores a
model m by::

    ACC(m) * (LAT(m) / T) ** w,   w = alpha if LAT(m) <= T else beta

Two presets come from the paper (Sec. 3.1 and Fig. 6), with T = 75 ms for the ImageNet search:

* ``soft`` (alpha = beta = -0.07): every doubling of latency costs about 5% of reward on both sides of T, so the
  controller trades accuracy against latency smoothly and its samples spread out around T (Fig. 6b).
* ``hard`` (alpha = 0, beta = -1): below T the reward is the accuracy alone; above T it falls in proportion to the
  overshoot, so the controller is pushed below T and its samples bunch up under it (Fig. 6a).

Several targets at once (say a Pixel 1 latency predicted from a table and the latency measured on this host) multiply
their latency terms: ``ACC * prod_i (LAT_i / T_i) ** w_i``. That is our extension; the paper uses one target.

Failed children. A child that could not be trained or measured (NaN loss, out of memory, conversion error) gets
``failed_reward``, 0.0 by default. Working children score ``ACC * (positive factor) >= 0``, so 0.0 ranks a failure
at or below every working child without dragging the controller's moving-average baseline far away from the scale
of real rewards, as a large negative value would. It is configurable for searches that want failures punished harder.

Bad numbers are errors, not failures: calling a reward with a NaN, infinite or out-of-range accuracy or latency
raises ``ValueError``, because such a value almost always means a bug upstream (a percentage instead of a fraction,
a latency of -1 used as "unknown") that silently scoring 0 would hide. The worker that sees a genuinely failed child
reports it as failed; `Reward.score` does that conversion for callers who want it, and returns the reason.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

# name -> (alpha, beta), from Sec. 3.1 of the paper.
PRESETS: dict[str, tuple[float, float]] = {
    "soft": (-0.07, -0.07),
    "hard": (0.0, -1.0),
}


def _check_term(target_ms: float, alpha: float, beta: float, where: str) -> None:
    """Rejects a target or exponent that would make the latency term meaningless."""
    if not _is_number(target_ms) or not math.isfinite(target_ms) or target_ms <= 0:
        raise ValueError(f"{where}: the latency target must be a positive number of milliseconds, got {target_ms!r}")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not _is_number(value) or not math.isfinite(value) or value > 0:
            raise ValueError(f"{where}: {name} must be a finite number <= 0 (a positive exponent would reward "
                             f"slower models), got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_accuracy(accuracy: float) -> float:
    if not _is_number(accuracy) or not 0.0 <= accuracy <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r} "
                         "(report a child that failed as failed, and accuracies in percent divided by 100)")
    return float(accuracy)


def _latency_factor(latency_ms: float, target_ms: float, alpha: float, beta: float, source: str) -> float:
    """(LAT / T) ** w with the paper's choice of w: alpha at or below the target, beta above it."""
    if not _is_number(latency_ms) or not math.isfinite(latency_ms) or latency_ms <= 0:
        raise ValueError(f"latency {source!r} must be a positive finite number of milliseconds, got {latency_ms!r}")
    exponent = alpha if latency_ms <= target_ms else beta
    return (latency_ms / target_ms) ** exponent


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """The paper's reward for one latency target.

    Attributes:
        target_ms: the target latency T in milliseconds (75 for the paper's Pixel 1 search).
        alpha: exponent of LAT/T when LAT <= T (0 or negative: being faster than T is worth at most a small bonus).
        beta: exponent of LAT/T when LAT > T (negative: slower than T costs reward).
        failed_reward: the reward of a child that failed; see the module docstring for why 0.0.
    """

    target_ms: float
    alpha: float
    beta: float
    failed_reward: float = 0.0

    def __post_init__(self):
        _check_term(self.target_ms, self.alpha, self.beta, "reward config")
        if not _is_number(self.failed_reward) or not math.isfinite(self.failed_reward):
            raise ValueError(f"reward config: failed_reward must be a finite number, got {self.failed_reward!r}")

    @classmethod
    def preset(cls, name: str, target_ms: float, failed_reward: float = 0.0) -> "RewardConfig":
        """The paper's 'soft' or 'hard' constraint at `target_ms`."""
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"unknown reward preset {name!r} (known: {', '.join(PRESETS)})")
        alpha, beta = PRESETS[name]
        return cls(target_ms=target_ms, alpha=alpha, beta=beta, failed_reward=failed_reward)

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        """ACC * (LAT / T) ** w. Raises ValueError on a NaN, infinite or out-of-range input."""
        factor = _latency_factor(latency_ms, self.target_ms, self.alpha, self.beta, "latency")
        return _check_accuracy(accuracy) * factor

    def term(self, source: str) -> "LatencyTerm":
        """This config's target and exponents as one term of a multi-target `Reward`."""
        return LatencyTerm(source=source, target_ms=self.target_ms, alpha=self.alpha, beta=self.beta)


@dataclasses.dataclass(frozen=True)
class LatencyTerm:
    """One factor (LAT_source / T) ** w of a multi-target reward.

    Attributes:
        source: the name under which the latency is reported, e.g. 'pixel1_predicted' or 'host_measured'.
        target_ms: the target latency T of this source, in milliseconds.
        alpha: exponent when LAT <= T.
        beta: exponent when LAT > T.
    """

    source: str
    target_ms: float
    alpha: float
    beta: float

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"a latency term needs a non-empty source name, got {self.source!r}")
        _check_term(self.target_ms, self.alpha, self.beta, f"latency term {self.source!r}")

    @classmethod
    def preset(cls, source: str, name: str, target_ms: float) -> "LatencyTerm":
        """The paper's 'soft' or 'hard' constraint on `source` at `target_ms`."""
        return RewardConfig.preset(name, target_ms).term(source)

    def factor(self, latency_ms: float) -> float:
        return _latency_factor(latency_ms, self.target_ms, self.alpha, self.beta, self.source)


@dataclasses.dataclass(frozen=True)
class Score:
    """A scored child: its reward, and why it counts as failed (None when it worked)."""

    reward: float
    failure: str | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None


class Reward:
    """ACC * prod_i (LAT_i / T_i) ** w_i over named latency sources.

    With no terms the reward is the accuracy alone (an accuracy-only search). Latencies of sources without a term
    are ignored, so a worker may report more measurements than the reward uses.
    """

    def __init__(self, terms: Iterable[LatencyTerm | Sequence], failed_reward: float = 0.0):
        """Builds the reward.

        Args:
            terms: `LatencyTerm`s, or (source, target_ms, alpha, beta) tuples.
            failed_reward: the reward of a failed child (see the module docstring).
        """
        self.terms: tuple[LatencyTerm, ...] = tuple(t if isinstance(t, LatencyTerm) else _term_from(t) for t in terms)
        sources = [t.source for t in self.terms]
        duplicates = sorted({s for s in sources if sources.count(s) > 1})
        if duplicates:
            raise ValueError(f"reward: latency source(s) {', '.join(map(repr, duplicates))} given more than once")
        if not _is_number(failed_reward) or not math.isfinite(failed_reward):
            raise ValueError(f"reward: failed_reward must be a finite number, got {failed_reward!r}")
        self.failed_reward = float(failed_reward)

    @classmethod
    def from_config(cls, config: RewardConfig, source: str = "latency") -> "Reward":
        """The single-target reward of `config`, reading its latency from `source`."""
        return cls([config.term(source)], failed_reward=config.failed_reward)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(t.source for t in self.terms)

    def __call__(self, accuracy: float, latencies: Mapping[str, float]) -> float:
        """The reward of a working child.

        Raises:
            ValueError: a term's source is missing from `latencies`, or a value is NaN, infinite or out of range.
        """
        if not isinstance(latencies, Mapping):
            raise ValueError(f"latencies must be a mapping of source name to milliseconds, got {latencies!r}")
        missing = [s for s in self.sources if s not in latencies]
        if missing:
            raise ValueError(f"reward: no latency for source(s) {', '.join(map(repr, missing))} "
                             f"(given: {', '.join(map(repr, latencies)) or 'none'})")
        reward = _check_accuracy(accuracy)
        for term in self.terms:
            reward *= term.factor(latencies[term.source])
        return reward

    def score(self, accuracy: float | None, latencies: Mapping[str, float] | None,
              failure: str | None = None) -> Score:
        """Scores a child that may have failed, never raising: the failed reward comes with its reason.

        A child fails when `failure` names a reason (the worker's), or when its numbers are unusable (missing,
        NaN, infinite, out of range); the reason then is the ValueError's message.
        """
        if failure is not None:
            return Score(self.failed_reward, str(failure))
        if accuracy is None or latencies is None:
            return Score(self.failed_reward, "no accuracy or latency reported")
        try:
            return Score(self(accuracy, latencies))
        except ValueError as err:
            return Score(self.failed_reward, str(err))

    def __repr__(self) -> str:
        terms = ", ".join(f"({t.source!r}, {t.target_ms}, {t.alpha}, {t.beta})" for t in self.terms)
        return f"Reward([{terms}], failed_reward={self.failed_reward})"


def _term_from(raw: Sequence) -> LatencyTerm:
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or len(raw) != 4:
        raise ValueError(f"a latency term is (source, target_ms, alpha, beta), got {raw!r}")
    return LatencyTerm(*raw)
