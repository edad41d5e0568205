"""Search strategies: what proposes the next genotype and learns from finished children.

A strategy sees only the space's list of choice counts and rewards: it never builds or trains a model. Each
proposal carries what the strategy needs back when the child finishes (the controller's log-probability at
sampling time), so children may finish in any order.

    mnas    the paper's controller: an LSTM policy trained with PPO (`search.controller`, TensorFlow)
    random  uniform sampling over genotypes, the baseline every NAS result should beat
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Proposal:
    indices: tuple[int, ...]
    log_prob: float | None = None   # the policy's log-probability of `indices` when they were sampled
    step: int = 0                   # the strategy's update count when the proposal was made


class RandomStrategy:
    """Uniform random search over genotypes, seeded and resumable."""

    name = "random"

    def __init__(self, choice_counts: Sequence[int], seed: int = 0, **_ignored):
        self.choice_counts = list(choice_counts)
        self._rng = random.Random(seed)

    def propose(self) -> Proposal:
        return Proposal(tuple(self._rng.randrange(n) for n in self.choice_counts))

    def observe(self, proposal: Proposal, reward: float) -> dict | None:
        return None

    @property
    def step(self) -> int:
        return 0

    def entropy(self) -> float | None:
        return None

    def get_state(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"choice_counts": self.choice_counts, "rng": [version, list(internal), gauss]}

    def set_state(self, state: Mapping[str, Any]) -> None:
        _check_counts(self.choice_counts, state["choice_counts"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


class ControllerStrategy:
    """The MnasNet controller (LSTM + PPO) behind the strategy interface."""

    name = "mnas"

    def __init__(self, choice_counts: Sequence[int], seed: int = 0, controller: Mapping[str, Any] | None = None):
        from search.controller import Controller, PPOConfig  # TensorFlow: only when this strategy is used

        settings = dict(controller or {})
        settings.setdefault("seed", seed)
        known = {f.name for f in dataclasses.fields(PPOConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"controller: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        self.choice_counts = list(choice_counts)
        self.controller = Controller(self.choice_counts, PPOConfig(**settings))

    def propose(self) -> Proposal:
        sample = self.controller.sample()
        return Proposal(tuple(int(i) for i in sample.indices), float(sample.log_prob), self.controller.step)

    def observe(self, proposal: Proposal, reward: float) -> dict | None:
        return self.controller.observe(list(proposal.indices), proposal.log_prob, reward)

    @property
    def step(self) -> int:
        return int(self.controller.step)

    def entropy(self) -> float | None:
        return float(self.controller.entropy())

    def get_state(self) -> dict:
        return self.controller.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.controller.set_state(state)


STRATEGIES: dict[str, Callable[..., Any]] = {
    "mnas": ControllerStrategy,
    "random": RandomStrategy,
}


def make_strategy(name: str, choice_counts: Sequence[int], seed: int = 0,
                  controller: Mapping[str, Any] | None = None):
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})") from None
    return factory(choice_counts, seed=seed, controller=controller)


def _check_counts(mine: Sequence[int], theirs: Sequence[int]) -> None:
    if list(mine) != list(theirs):
        raise ValueError(f"saved state is for a space with choice counts {list(theirs)}, "
                         f"not this one ({list(mine)})")
