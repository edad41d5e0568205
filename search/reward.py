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
reports it as failed, with its reason (`search.failures`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

from mnas.search.arch import echo

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

    def factor(self, latency_ms: float) -> float:
        return _latency_factor(latency_ms, self.target_ms, self.alpha, self.beta, self.source)


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
    def from_settings(cls, section: Mapping[str, Any], latency: Sequence[str]) -> "Reward":
        """The reward of a search config's `reward` section; its first term reads the backend `latency[0]`.

        ``{preset: soft, target_ms: 75}`` (or ``alpha`` and ``beta`` instead of a preset), ``failed_reward``, and
        ``extra_targets: [{latency: host, target_ms: 20, preset: soft}]`` for more terms on other backends of
        `latency` (the paper uses one target; several multiply). Errors name the setting, e.g.
        ``reward.extra_targets[1]: target_ms is required``.
        """
        if not isinstance(section, Mapping):
            raise ValueError(f"reward: must be a mapping such as {{preset: soft, target_ms: 75}}, got {echo(section)}")
        unknown = sorted((key for key in section if key not in SETTINGS), key=str)
        if unknown:
            raise ValueError(f"reward: unknown setting(s) {', '.join(echo(key) for key in unknown)} "
                             f"(known: {', '.join(sorted(SETTINGS))})")
        latency = list(latency)
        if not latency:
            raise ValueError("reward: the search needs at least one latency backend")
        terms = [_term_of(section, latency[0], "reward")]
        extras = section.get("extra_targets") or []
        if not isinstance(extras, list):
            raise ValueError("reward: extra_targets must be a list of {latency, target_ms, ...} mappings")
        for number, extra in enumerate(extras, 1):
            where = f"reward.extra_targets[{number}]"
            if not isinstance(extra, Mapping) or extra.get("latency") not in latency:
                raise ValueError(f"{where}: 'latency' must name one of the search's latency backends {latency}")
            terms.append(_term_of(extra, extra["latency"], where))
        return cls(terms, failed_reward=section.get("failed_reward", 0.0))

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

    def describe(self) -> str:
        """The latency terms as one line, e.g. '(pixel1/75ms)^(-0.07|-0.07)'; 'accuracy' with none."""
        return " * ".join(f"({t.source}/{t.target_ms:g}ms)^({t.alpha:g}|{t.beta:g})" for t in self.terms) or "accuracy"

    def __repr__(self) -> str:
        terms = ", ".join(f"({t.source!r}, {t.target_ms}, {t.alpha}, {t.beta})" for t in self.terms)
        return f"Reward([{terms}], failed_reward={self.failed_reward})"


SETTINGS = frozenset({"preset", "target_ms", "alpha", "beta", "failed_reward", "extra_targets"})


def _term_of(raw: Mapping[str, Any], source: str, where: str) -> LatencyTerm:
    """One term from its settings: a preset, or alpha and beta (which override a preset's)."""
    if "target_ms" not in raw:
        raise ValueError(f"{where}: target_ms is required")
    preset = raw.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ValueError(f"{where}: unknown reward preset {echo(preset)} (known: {', '.join(PRESETS)})")
    alpha, beta = PRESETS[preset] if preset else (None, None)
    alpha, beta = raw.get("alpha", alpha), raw.get("beta", beta)
    if alpha is None or beta is None:
        raise ValueError(f"{where}: give a preset ({', '.join(PRESETS)}) or both alpha and beta")
    target = raw["target_ms"]
    if not all(_is_number(value) for value in (target, alpha, beta)):
        raise ValueError(f"{where}: target_ms, alpha and beta must be numbers, got {echo(target)}, {echo(alpha)}, "
                         f"{echo(beta)}")
    try:
        return LatencyTerm(source=source, target_ms=float(target), alpha=float(alpha), beta=float(beta))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _term_from(raw: Sequence) -> LatencyTerm:
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or len(raw) != 4:
        raise ValueError(f"a latency term is (source, target_ms, alpha, beta), got {raw!r}")
    return LatencyTerm(*raw)
