"""Search strategies: what proposes the next genotype and learns from finished children.

A strategy sees only the space's list of choice counts and rewards: it never builds or trains a model. Each
proposal carries what the strategy needs back when the child finishes (the controller's log-probability at
sampling time), so children may finish in any order.

    mnas       the paper's controller: an LSTM policy trained with PPO (`search.controller`, TensorFlow)
    random     uniform sampling over genotypes, the baseline every NAS result should beat
    evolution  regularized (aging) evolution, Real et al. AAAI 2019: tournament selection, one-decision mutation
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Mapping, Sequence

from mnas.search.settings import POSITIVE_INT, from_mapping, setting, validate


@dataclasses.dataclass(frozen=True)
class Proposal:
    indices: tuple[int, ...]
    log_prob: float | None = None   # the policy's log-probability of `indices` when they were sampled
    step: int = 0                   # the strategy's update count when the proposal was made


class _SeededStrategy:
    """What the strategies without a learned policy share: a seeded RNG whose state saves as plain values."""

    def __init__(self, choice_counts: Sequence[int], seed: int):
        self.choice_counts = list(choice_counts)
        self._rng = random.Random(seed)

    def _random_indices(self) -> tuple[int, ...]:
        return tuple(self._rng.randrange(n) for n in self.choice_counts)

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


class RandomStrategy(_SeededStrategy):
    """Uniform random search over genotypes, seeded and resumable."""

    name = "random"

    def __init__(self, choice_counts: Sequence[int], seed: int = 0, settings: Mapping[str, Any] | None = None):
        if settings:
            raise ValueError(f"random search takes no settings, got {', '.join(sorted(settings))}")
        super().__init__(choice_counts, seed)

    def propose(self) -> Proposal:
        return Proposal(self._random_indices())


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """A config's `evolution:` section."""

    population: int = setting(20, POSITIVE_INT)
    """Members kept alive; the first `population` proposals are uniform random."""
    sample_size: int = setting(5, POSITIVE_INT)
    """Members drawn for each tournament; the best of them is mutated."""

    def __post_init__(self):
        validate(self, "evolution", section=True)
        if self.population < 2 or self.sample_size > self.population:
            raise ValueError(f"evolution needs population >= 2 and sample_size <= population, got population "
                             f"{self.population} and sample_size {self.sample_size}")


class EvolutionStrategy(_SeededStrategy):
    """Regularized evolution (Real et al., "Regularized Evolution for Image Classifier Architecture Search", 2019).

    The first `population` proposals are uniform random. After that each proposal takes `sample_size` members of
    the population at random, mutates the best of them (by reward) in one decision chosen uniformly, to a
    different option, and the child joins the population when it finishes while the oldest member leaves
    (aging: a lucky early reward cannot dominate forever). Children finish asynchronously; a proposal is only
    ever built from members that have finished.
    """

    name = "evolution"

    def __init__(self, choice_counts: Sequence[int], seed: int = 0, settings: Mapping[str, Any] | None = None):
        config = from_mapping(EvolutionConfig, settings, "evolution")
        super().__init__(choice_counts, seed)
        self.population_size, self.sample_size = config.population, config.sample_size
        self.population: list[tuple[tuple[int, ...], float]] = []   # oldest first
        self.proposed = 0

    def propose(self) -> Proposal:
        self.proposed += 1
        if len(self.population) < self.population_size:
            return Proposal(self._random_indices())
        contenders = self._rng.sample(self.population, self.sample_size)
        parent = max(contenders, key=lambda member: member[1])[0]
        child = list(parent)
        mutable = [i for i, n in enumerate(self.choice_counts) if n > 1]
        if mutable:
            position = self._rng.choice(mutable)
            child[position] = self._rng.choice([o for o in range(self.choice_counts[position])
                                                if o != child[position]])
        return Proposal(tuple(child))

    def observe(self, proposal: Proposal, reward: float) -> dict | None:
        self.population.append((tuple(proposal.indices), float(reward)))
        if len(self.population) > self.population_size:
            self.population.pop(0)
        return None

    def get_state(self) -> dict:
        return {**super().get_state(), "population": [[list(ind), r] for ind, r in self.population],
                "proposed": self.proposed, "population_size": self.population_size, "sample_size": self.sample_size}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.population = [(tuple(ind), float(r)) for ind, r in state["population"]]
        self.proposed = int(state["proposed"])
        self.population_size, self.sample_size = int(state["population_size"]), int(state["sample_size"])


class ControllerStrategy:
    """The MnasNet controller (LSTM + PPO) behind the strategy interface.

    Its settings are PPOConfig fields, optionally on top of a named preset: `{preset: nasnet}` is NASNet's."""

    name = "mnas"

    def __init__(self, choice_counts: Sequence[int], seed: int = 0, settings: Mapping[str, Any] | None = None):
        from mnas.search.controller import Controller, PPOConfig  # TensorFlow: only when this strategy is used

        self.choice_counts = list(choice_counts)
        self.controller = Controller(self.choice_counts, PPOConfig.from_settings(settings, seed=seed))

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
    "evolution": EvolutionStrategy,
}


def make_strategy(name: str, choice_counts: Sequence[int], seed: int = 0,
                  settings: Mapping[str, Any] | None = None):
    """The strategy `name`, configured by its own settings (PPOConfig fields and an optional `preset` for mnas,
    population and sample_size for evolution, none for random)."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})") from None
    return factory(choice_counts, seed=seed, settings=settings)


def _check_counts(mine: Sequence[int], theirs: Sequence[int]) -> None:
    if list(mine) != list(theirs):
        raise ValueError(f"saved state is for a space with choice counts {list(theirs)}, "
                         f"not this one ({list(mine)})")
