"""The LSTM + PPO controller: samples, determinism, exact save/restore, learning a toy reward, stale children."""

import ast
import math
import os

import numpy as np
import pytest

from mnas.search.config import SearchConfig
from mnas.search.controller import DRAWN_LIMIT, PRESETS, Controller, PPOConfig, Sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small networks and batches where the test is about bookkeeping, not learning: they trace and run faster.
SMALL = dict(lstm_units=16, embedding_dim=8, batch_size=4, update_epochs=2)
# The same with every option that adds state or a code path: per-decision ratios (remembered log-probabilities),
# the entropy floor, early stopping on the KL.
SMALL_PER_DECISION = dict(SMALL, ratio_per_decision=True, entropy_floor=0.3, target_kl=0.05, normalize_advantages=True)


def toy_reward(target):
    """The fraction of decisions equal to a hidden target: an arithmetic stand-in for training a child."""
    target = np.asarray(target)
    return lambda indices: float(np.mean(np.asarray(indices) == target))


def weights_and_slots(ctrl):
    state = ctrl.get_state()
    return list(state["weights"].values()) + state["optimizer"]


def assert_arrays_equal(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        np.testing.assert_array_equal(a, b)


def test_samples_have_one_valid_index_per_decision_and_cover_every_option():
    counts = [1, 2, 5, 3]
    ctrl = Controller(counts, PPOConfig(**SMALL))
    samples = [ctrl.sample() for _ in range(150)]
    assert all(isinstance(s, Sample) and len(s.indices) == len(counts) for s in samples)
    assert all(isinstance(i, int) for s in samples for i in s.indices)
    for t, count in enumerate(counts):
        # The initial policy is near uniform, so 150 draws see every option (miss chance < 1e-13).
        assert {s.indices[t] for s in samples} == set(range(count))
    assert all(s.log_prob <= 0 and math.isfinite(s.log_prob) for s in samples)
    greedy = ctrl.greedy()
    assert len(greedy) == len(counts) and all(0 <= g < n for g, n in zip(greedy, counts))
    uniform_entropy = np.mean([math.log(n) for n in counts])
    assert ctrl.entropy() == pytest.approx(uniform_entropy, abs=0.01)


def test_log_prob_at_sampling_time_equals_the_recomputed_log_prob():
    counts = [2, 3, 4, 3] * 3
    ctrl = Controller(counts, PPOConfig(**SMALL))
    reward = toy_reward([0] * len(counts))
    for _ in range(3):  # before and after updates: the sampled and teacher-forced paths must agree
        for _ in range(SMALL["batch_size"]):
            sample = ctrl.sample()
            assert sample.log_prob == pytest.approx(ctrl.log_prob(sample.indices), abs=1e-5)
            ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices))
    assert ctrl.step == 3


def test_single_decision_space_works():
    ctrl = Controller([3], PPOConfig(**SMALL))
    sample = ctrl.sample()
    assert len(sample.indices) == 1 and sample.log_prob == pytest.approx(ctrl.log_prob(sample.indices), abs=1e-6)


def test_same_seed_same_observations_same_search():
    counts = [2, 3, 4, 3] * 2
    reward = toy_reward([1] * len(counts))
    runs = []
    for _ in range(2):
        ctrl = Controller(counts, PPOConfig(seed=11, **SMALL))
        samples = []
        for _ in range(3 * SMALL["batch_size"]):
            sample = ctrl.sample()
            samples.append(sample)
            ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices))
        runs.append((samples, weights_and_slots(ctrl), ctrl.baseline))
    assert runs[0][0] == runs[1][0]
    assert_arrays_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
    other = Controller(counts, PPOConfig(seed=12, **SMALL))
    assert [other.sample() for _ in range(5)] != runs[0][0][:5]


@pytest.mark.parametrize("small", [SMALL, SMALL_PER_DECISION], ids=["per-architecture", "per-decision"])
def test_save_with_children_in_flight_then_restore_continues_exactly(tmp_path, small):
    """The uninterrupted run and the saved-then-loaded run must agree bit for bit."""
    counts = [2, 3, 4, 3] * 2
    reward = toy_reward([2, 1, 0, 2] * 2)
    config = PPOConfig(seed=5, learning_rate=3e-3, **small)

    def drive(ctrl, in_flight, rounds):
        """Completes the children in flight, then samples and completes `rounds` more, one at a time."""
        samples = []
        for sample in in_flight:
            ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices))
        for _ in range(rounds):
            sample = ctrl.sample()
            samples.append(sample)
            ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices))
        return samples

    ctrl = Controller(counts, config)
    drive(ctrl, [], 6)  # one update done, 2 children pending
    in_flight = [ctrl.sample() for _ in range(3)]  # drawn, not yet completed: the searcher keeps them
    assert ctrl.step == 1 and ctrl.pending == 2
    assert len(ctrl.get_state()["drawn"]) == (3 if config.ratio_per_decision else 0)
    path = tmp_path / "controller.npz"
    ctrl.save(path)
    before = ctrl.get_state()

    continued = drive(ctrl, in_flight, 9)
    restored = Controller.load(path)
    assert_arrays_equal(weights_and_slots(restored), list(before["weights"].values()) + before["optimizer"])
    assert restored.pending == 2 and restored.step == 1 and restored.baseline == before["baseline"]
    assert restored.config == config and restored.get_state()["drawn"] == before["drawn"]
    resumed = drive(restored, in_flight, 9)

    assert resumed == continued
    assert restored.step == ctrl.step == 4
    assert restored.baseline == ctrl.baseline
    assert_arrays_equal(weights_and_slots(restored), weights_and_slots(ctrl))
    if not config.target_kl:
        assert int(restored.get_state()["optimizer"][0]) == 4 * SMALL["update_epochs"]  # Adam's iteration count
    assert os.listdir(tmp_path) == ["controller.npz"]  # the temporary file was moved into place


def test_set_state_in_memory_round_trips_exactly():
    counts = [3, 2, 4]
    ctrl = Controller(counts, PPOConfig(seed=1, **SMALL))
    for _ in range(5):
        sample = ctrl.sample()
        ctrl.observe(sample.indices, sample.log_prob, 0.5 + 0.1 * sample.indices[0])
    fresh = Controller(counts, PPOConfig(seed=99, **SMALL))
    fresh.set_state(ctrl.get_state())
    assert_arrays_equal(weights_and_slots(fresh), weights_and_slots(ctrl))
    assert fresh.config == ctrl.config and fresh.get_state()["pending"] == ctrl.get_state()["pending"]
    assert [fresh.sample() for _ in range(4)] == [ctrl.sample() for _ in range(4)]


def test_a_state_from_before_the_per_decision_fields_restores_as_it_was_saved():
    """States written before ratio_per_decision, target_kl and the entropy floor existed lack them and `drawn`;
    they restore with those off, which is how they were saved."""
    counts = [3, 2, 4]
    ctrl = Controller(counts, PPOConfig(seed=1, **SMALL))
    for _ in range(5):
        sample = ctrl.sample()
        ctrl.observe(sample.indices, sample.log_prob, 0.5 + 0.1 * sample.indices[0])
    state = ctrl.get_state()
    for name in ("ratio_per_decision", "target_kl", "entropy_floor", "entropy_floor_weight"):
        del state["config"][name]
    del state["drawn"]
    for entry in state["pending"]:
        del entry["decision_log_probs"]
    fresh = Controller(counts, PPOConfig(seed=9, **SMALL_PER_DECISION))
    fresh.set_state(state)
    assert fresh.config == ctrl.config and fresh.pending == 1
    assert [fresh.sample() for _ in range(4)] == [ctrl.sample() for _ in range(4)]


def test_per_decision_ratio_remembers_what_a_child_was_drawn_with():
    counts = [2, 3, 4, 3] * 2
    reward = toy_reward([0] * len(counts))
    ctrl = Controller(counts, PPOConfig(learning_rate=3e-3, seed=2, **dict(SMALL_PER_DECISION, batch_size=4)))
    stale = [ctrl.sample() for _ in range(4)]
    for _ in range(4):
        fresh = ctrl.sample()
        stats = ctrl.observe(fresh.indices, fresh.log_prob, reward(fresh.indices))
    assert stats["first_ratio_dev"] < 1e-4  # each decision's pi_old is the value it was drawn with
    assert len(ctrl.get_state()["drawn"]) == 4  # the stale ones, still out
    for sample in stale:
        stats = ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices)) or stats
    assert stats["step"] == 2 and stats["first_ratio_dev"] > 1e-3 and ctrl.get_state()["drawn"] == []
    # A child it never drew (another controller's, or one forgotten) still updates: its per-decision pi_old is
    # today's policy shifted to its stored log-probability.
    other = Controller(counts, PPOConfig(seed=3, **SMALL_PER_DECISION))
    foreign = [other.sample() for _ in range(4)]
    for sample in foreign:
        stats = ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices)) or stats
    assert stats["step"] == 3 and all(math.isfinite(v) for v in stats.values())
    for _ in range(DRAWN_LIMIT + 5):
        ctrl.sample()  # children that never come back are forgotten, oldest first
    assert len(ctrl.get_state()["drawn"]) == DRAWN_LIMIT


def test_target_kl_stops_the_epochs_of_an_update():
    counts = [2, 3, 4, 3]
    reward = toy_reward([1, 2, 3, 0])

    def epochs(target_kl):
        ctrl = Controller(counts, PPOConfig(**dict(SMALL, update_epochs=6, learning_rate=3e-2, target_kl=target_kl)))
        for _ in range(SMALL["batch_size"]):
            sample = ctrl.sample()
            stats = ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices))
        return stats["epochs"], stats["approx_kl"]

    assert epochs(None)[0] == 6
    # The first epoch starts where the update began (KL 0); the second sees the first step's move and stops.
    count, kl = epochs(1e-9)
    assert count == 2 and kl > 1e-9


def test_entropy_floor_keeps_the_policy_from_collapsing():
    counts = [2, 3, 4, 3] * 2
    reward = toy_reward([1, 2, 3, 0] * 2)
    uniform = float(np.mean(np.log(counts)))

    def final_entropy(floor):
        ctrl = Controller(counts, PPOConfig(**dict(SMALL, learning_rate=3e-2, normalize_advantages=True,
                                                   entropy_floor=floor)))
        for _ in range(160):
            sample = ctrl.sample()
            ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices))
        return ctrl.entropy() / uniform

    # Without a floor this fast policy is near certain after 160 children; with it, held near 40% of uniform.
    assert final_entropy(None) < 0.1
    assert final_entropy(0.4) > 0.3


def test_restore_into_other_choice_counts_names_both():
    ctrl = Controller([2, 3], PPOConfig(**SMALL))
    other = Controller([2, 4], PPOConfig(**SMALL))
    with pytest.raises(ValueError) as err:
        other.set_state(ctrl.get_state())
    assert "[2, 3]" in str(err.value) and "[2, 4]" in str(err.value)


def test_a_bad_state_changes_nothing():
    ctrl = Controller([2, 3], PPOConfig(**SMALL))
    before = weights_and_slots(ctrl)
    state = Controller([2, 3], PPOConfig(seed=3, **SMALL)).get_state()
    state["optimizer"][-1] = np.zeros([7])
    with pytest.raises(ValueError, match="shape"):
        ctrl.set_state(state)
    assert_arrays_equal(weights_and_slots(ctrl), before)
    with pytest.raises(ValueError, match="lstm_units"):
        ctrl.set_state(Controller([2, 3], PPOConfig(**dict(SMALL, lstm_units=8))).get_state())


def test_learns_the_toy_optimum_far_sooner_than_random_search():
    counts = [2, 3, 4, 3] * 4  # 16 decisions: 72 ** 4 = 2.7e7 architectures, one optimum
    target = [int(i) for i in np.random.default_rng(7).integers(0, counts)]
    reward = toy_reward(target)
    # 10x NASNet's learning rate: with the default 3.5e-4 it gets there too, in about 500 samples instead of
    # about 200, which costs this test seconds it does not have on a shared 2-core machine.
    ctrl = Controller(counts, PPOConfig(learning_rate=3e-3, seed=3))
    budget, used, first_optimum, stats = 600, 0, None, None
    while used < budget:
        sample = ctrl.sample()
        used += 1
        value = reward(sample.indices)
        if value == 1.0 and first_optimum is None:
            first_optimum = used
        result = ctrl.observe(sample.indices, sample.log_prob, value)
        if result:
            stats = result
            if stats["mean_reward"] >= 0.95:
                break
    assert stats["mean_reward"] >= 0.95, f"no batch of the policy reached 0.95 in {budget} samples"
    assert first_optimum is not None and reward(ctrl.greedy()) == 1.0
    print(f"controller: optimum sampled after {first_optimum}, batch mean >= 0.95 after {used} samples")

    # Uniform random search with the same budget: it finds the optimum with probability used / 2.7e7.
    rng = np.random.default_rng(0)
    random_best = max(reward(rng.integers(0, counts)) for _ in range(used))
    assert random_best < 0.95
    assert used * math.prod(1 / n for n in counts) < 1e-4


def test_stale_children_are_updated_with_their_stored_log_probs():
    """Asynchronous completions: children drawn before an update finish after it."""
    counts = [2, 3, 4, 3] * 2
    reward = toy_reward([0] * len(counts))
    ctrl = Controller(counts, PPOConfig(learning_rate=3e-3, seed=2, **dict(SMALL, batch_size=4)))
    stale = [ctrl.sample() for _ in range(4)]
    for _ in range(4):
        fresh = ctrl.sample()
        stats = ctrl.observe(fresh.indices, fresh.log_prob, reward(fresh.indices))
    assert stats["step"] == 1 and stats["first_ratio_dev"] < 1e-4  # on-policy: ratio 1 before the first step
    # The policy moved: the stored log-probs of the stale children differ from their current ones.
    assert max(abs(s.log_prob - ctrl.log_prob(s.indices)) for s in stale) > 1e-3
    for sample in stale:
        stats = ctrl.observe(sample.indices, sample.log_prob, reward(sample.indices)) or stats
    assert stats["step"] == 2 and stats["first_ratio_dev"] > 1e-3  # ratio != 1: pi_old is the stored value


def nk_reward(counts, seed):
    """An NK-like objective: each decision's term is a random table over its own option and two other decisions'
    options, so no decision has a best option of its own (benchmarks/controller_bench.py measures the real one)."""
    rng = np.random.default_rng(seed)
    links = [[d, *rng.choice([e for e in range(len(counts)) if e != d], 2, replace=False)] for d in range(len(counts))]
    tables = [rng.random([counts[e] for e in link]) for link in links]
    scale = sum(t.max() for t in tables)
    return lambda indices: sum(float(t[tuple(indices[e] for e in link)]) for t, link in zip(tables, links)) / scale


def test_default_config_settings_learn_an_interacting_objective_far_better_than_random():
    counts = [4, 2, 2, 3, 3, 3] * 2  # two blocks of the paper's decisions: 46,656 architectures
    reward = nk_reward(counts, seed=4)
    settings = SearchConfig.load(os.path.join(ROOT, "configs", "default.yaml")).controller
    ctrl = Controller(counts, PPOConfig.from_settings(settings, seed=0))
    values = []
    for _ in range(250):
        sample = ctrl.sample()
        values.append(reward(sample.indices))
        ctrl.observe(sample.indices, sample.log_prob, values[-1])
    every = sorted(reward(g) for g in np.ndindex(*counts))
    rng = np.random.default_rng(0)
    random_best = [max(reward(rng.integers(0, counts)) for _ in range(250)) for _ in range(20)]
    # The policy's last 50 children on average beat 95% of all architectures (not one lucky draw); the best it found
    # beats random search's typical best of the same 250; and its entropy sits at the floor, not collapsed.
    assert np.mean(values[-50:]) > every[int(0.95 * len(every))]
    assert max(values) > np.mean(random_best)
    assert ctrl.entropy() > 0.2 * float(np.mean(np.log(counts)))


def test_update_diagnostics_and_baseline():
    ctrl = Controller([2, 2, 3], PPOConfig(**dict(SMALL, batch_size=3)))
    assert ctrl.update() == {} and ctrl.baseline is None
    rewards = [0.2, 0.4, 0.9]
    for value in rewards:
        sample = ctrl.sample()
        stats = ctrl.observe(sample.indices, sample.log_prob, value)
    for key in ("step", "pg_loss", "entropy", "approx_kl", "clipfrac", "baseline", "mean_reward", "grad_norm",
                "first_ratio_dev", "epochs"):
        assert math.isfinite(stats[key]), key
    assert stats["step"] == ctrl.step == 1 and stats["batch_size"] == 3
    assert ctrl.baseline == pytest.approx(0.5)  # the first batch's mean
    sample = ctrl.sample()
    ctrl.observe(sample.indices, sample.log_prob, 1.0)
    forced = ctrl.update()  # a partial batch, forced
    assert forced["step"] == 2 and forced["batch_size"] == 1
    assert ctrl.baseline == pytest.approx(0.95 * 0.5 + 0.05 * 1.0)


@pytest.mark.parametrize("indices, log_prob, reward, word", [
    ([0, 1], -1.0, 0.5, "3 decisions"),
    ([0, 2, 0], -1.0, 0.5, "out of range"),
    ([0, -1, 0], -1.0, 0.5, "out of range"),
    ([0, 1, 0], 0.5, 0.5, "log_prob"),
    ([0, 1, 0], -1.0, float("nan"), "reward"),
])
def test_observe_rejects_bad_children(indices, log_prob, reward, word):
    ctrl = Controller([2, 2, 3], PPOConfig(**SMALL))
    with pytest.raises(ValueError, match=word):
        ctrl.observe(indices, log_prob, reward)
    assert ctrl.pending == 0


@pytest.mark.parametrize("counts, word", [([], "empty"), ([2, 0], "choice_counts\\[1\\]"), ([2, 1.5], "1.5")])
def test_bad_choice_counts(counts, word):
    with pytest.raises(ValueError, match=word):
        Controller(counts)


@pytest.mark.parametrize("field, value", [
    ("lstm_units", 0), ("clip", -0.1), ("baseline_decay", 1.0), ("entropy_weight", -1.0), ("seed", -1),
    ("tanh_constant", 0.0), ("ratio_per_decision", 1), ("normalize_advantages", "yes"), ("target_kl", 0.0),
    ("target_kl", float("inf")), ("entropy_floor", 0.0), ("entropy_floor", 1.5), ("entropy_floor", True),
    ("entropy_floor_weight", 0.0), ("entropy_floor_weight", None),
])
def test_bad_config_raises_value_error(field, value):
    with pytest.raises(ValueError, match=field):
        PPOConfig(**{field: value})
    with pytest.raises(ValueError, match="bogus"):
        PPOConfig.from_dict({"bogus": 1})


def test_the_nasnet_preset_is_ppoconfigs_defaults_and_the_paper_config_uses_it():
    assert PRESETS["nasnet"] == {}
    assert PPOConfig.from_settings({"preset": "nasnet"}) == PPOConfig()
    assert PPOConfig.from_settings({"preset": "nasnet", "batch_size": 20}, seed=3) == PPOConfig(batch_size=20, seed=3)
    assert PPOConfig.from_settings(None, seed=4) == PPOConfig(seed=4)
    a1 = SearchConfig.load(os.path.join(ROOT, "configs", "mnasnet-a1.yaml"))
    assert a1.controller == {"preset": "nasnet"}
    assert PPOConfig.from_settings(a1.strategy_settings(), seed=a1.seed) == PPOConfig(seed=a1.seed)
    with pytest.raises(ValueError, match="unknown preset 'enas' \\(known: nasnet\\)"):
        PPOConfig.from_settings({"preset": "enas"})
    with pytest.raises(ValueError, match="unknown setting\\(s\\) lr "):
        PPOConfig.from_settings({"lr": 0.1})


def test_tanh_clipping_bounds_how_sure_the_policy_gets():
    # Huge weights make a near-deterministic policy; tanh_constant c keeps every logit in [-c, c], so no option
    # of four falls below exp(-c) / (exp(-c) + 3 exp(c)).
    def probabilities(tanh_constant):
        ctrl = Controller([4], PPOConfig(**dict(SMALL, init_range=50.0, tanh_constant=tanh_constant)))
        return np.exp([ctrl.log_prob([k]) for k in range(4)])

    bound = math.exp(-0.5) / (math.exp(-0.5) + 3 * math.exp(0.5))
    clipped, unclipped = probabilities(0.5), probabilities(None)
    assert clipped.sum() == pytest.approx(1.0, abs=1e-5) and clipped.min() >= bound - 1e-6
    assert unclipped.min() < bound


def test_controller_imports_no_ray_builder_trainer_or_workers():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search", "controller.py")
    tree = ast.parse(open(path).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    # the controller sees choice counts only: of the project, it uses the one atomic writer and the declared
    # settings (checks of its own config), nothing else
    project = {name for name in imported if name.split(".")[0] in {"ray", "mnas"}}
    assert project == {"mnas.search.fileio", "mnas.search.settings"}, imported
