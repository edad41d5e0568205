"""Search strategies on a toy objective over choice indices: no model, no TensorFlow (except the mnas wrapper)."""

import random

import pytest

from mnas.search.strategy import EvolutionStrategy, Proposal, RandomStrategy, make_strategy

COUNTS = [4, 2, 2, 3, 3, 3] * 3          # three blocks of the paper's per-block decisions


def toy_reward(indices, target):
    return sum(i == t for i, t in zip(indices, target)) / len(target)


def run(strategy, samples, target, in_flight=1):
    """Proposes and observes `samples` children, keeping `in_flight` outstanding (asynchronous completions)."""
    pending, best = [], []
    for _ in range(samples):
        pending.append(strategy.propose())
        if len(pending) >= in_flight:
            done = pending.pop(0)
            reward = toy_reward(done.indices, target)
            strategy.observe(done, reward)
            best.append(max(reward, best[-1] if best else 0))
    return best


def test_random_is_seeded_resumable_and_in_range():
    a, b = RandomStrategy(COUNTS, seed=1), RandomStrategy(COUNTS, seed=1)
    for _ in range(5):
        assert a.propose() == b.propose()
    c = RandomStrategy(COUNTS, seed=2)
    c.set_state(a.get_state())
    assert [c.propose() for _ in range(5)] == [a.propose() for _ in range(5)]
    assert all(0 <= i < n for i, n in zip(a.propose().indices, COUNTS))
    with pytest.raises(ValueError, match="choice counts"):
        RandomStrategy([2, 2]).set_state(a.get_state())
    with pytest.raises(ValueError, match="takes no settings"):
        RandomStrategy(COUNTS, settings={"population": 3})


def test_evolution_mutates_one_decision_of_a_tournament_winner():
    evo = EvolutionStrategy(COUNTS, seed=0, settings={"population": 4, "sample_size": 4})
    parents = [evo.propose() for _ in range(4)]
    for p, r in zip(parents, [0.1, 0.9, 0.2, 0.3]):
        evo.observe(p, r)
    child = evo.propose().indices
    best = parents[1].indices
    assert sum(a != b for a, b in zip(child, best)) == 1      # sample_size == population: always the best parent
    evo.observe(Proposal(child), 0.5)
    assert len(evo.population) == 4 and evo.population[0][0] == parents[1].indices  # the oldest left


def test_evolution_beats_random_and_survives_a_restore():
    target = [random.Random(3).randrange(n) for n in COUNTS]
    scores = {"random": [], "evolution": []}
    for seed in range(3):
        scores["random"].append(run(RandomStrategy(COUNTS, seed=seed), 300, target)[-1])
        scores["evolution"].append(run(EvolutionStrategy(COUNTS, seed=seed), 300, target, in_flight=2)[-1])
    assert min(scores["evolution"]) > max(scores["random"]), scores
    a = EvolutionStrategy(COUNTS, seed=5)
    run(a, 40, target)
    b = EvolutionStrategy(COUNTS, seed=6)
    b.set_state(a.get_state())
    assert [b.propose() for _ in range(10)] == [a.propose() for _ in range(10)]


def test_bad_settings_are_clear():
    with pytest.raises(ValueError, match="unknown strategy 'annealing'"):
        make_strategy("annealing", COUNTS)
    with pytest.raises(ValueError, match="population >= 2"):
        EvolutionStrategy(COUNTS, settings={"population": 1})
    with pytest.raises(ValueError, match="unknown setting"):
        EvolutionStrategy(COUNTS, settings={"mutation": 0.5})
    with pytest.raises(ValueError, match="lstm_unitz"):
        make_strategy("mnas", COUNTS, settings={"lstm_unitz": 4})


def test_mnas_settings_may_start_from_a_named_preset():
    from mnas.search.controller import PPOConfig

    strategy = make_strategy("mnas", COUNTS, seed=3, settings={"preset": "nasnet", "batch_size": 4})
    assert strategy.controller.config == PPOConfig(batch_size=4, seed=3)
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        make_strategy("mnas", COUNTS, settings={"preset": "fast"})
