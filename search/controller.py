"""The MnasNet controller: an LSTM policy over the search space's decisions, trained with PPO.

MnasNet (Tan et al., CVPR 2019, Sec. 4.2) reuses the NASNet controller (Zoph et al., CVPR 2018): a recurrent
network emits the architecture one decision at a time, and Proximal Policy Optimization (Schulman et al., 2017)
maximizes the expected reward of the sampled architectures. The paper gives no controller hyperparameters; ours
are NASNet's where NASNet states them (one LSTM layer of 100 units, learning rate 3.5e-4, entropy weight 1e-5,
moving-average baseline with decay 0.95) and cleanrl's PPO defaults elsewhere. Each default says which.

The policy. At step t the LSTM reads an embedding of the choice made at step t-1 (a learned start token at t=0),
and a head of its own maps the LSTM output to the logits of decision t, since decisions have different numbers of
options. All heads live in one matrix whose columns are sliced per decision, and all embeddings in one table whose
last row is the start token: a few variables instead of three per decision keep Adam's update cheap. The decisions'
logits are padded to the largest number of options (padding masked out) so that one
`tfp.distributions.Categorical` with a batch of [children, decisions] gives every decision's log-probability and
entropy at once; an architecture's log-probability is the sum over its decisions. The recurrences run in `tf.scan`
loops inside `tf.function`s: a graph of constant size traces in well under a second for any number of decisions.

PPO on architectures. Every decision of a child shares one advantage, reward - baseline (standardized per batch
if asked). Two readings of PPO's probability ratio are available. With `ratio_per_decision` off (NASNet's preset),
an architecture is one action of a one-step episode: one ratio exp(log pi_new(a) - log pi_old(a)) over the whole
sequence, clipped to 1 +- clip, so an update may change an architecture's probability, a product over all
decisions, by about 20% -- about half a percent per decision of a 42-decision space, which makes a slow learner.
With it on, each decision is an action of a T-step episode whose one reward arrives at the end, the way PPO
trains token sequences: one ratio per decision, each clipped on its own. Children finish out of order while the
policy keeps changing, so pi_old is what the policy gave the child when it was drawn: the sample's stored
log-probability, and per decision the values the controller remembers from `sample` (a child it did not draw, or
has forgotten, gets the current per-decision values shifted to sum to its stored log-probability). The clipping
then limits how far a stale child can push.

Keeping the search alive. A fast policy soon puts all its mass on one architecture and stops finding better ones.
`entropy_floor` sets a floor on its mean entropy per decision, as a fraction of the uniform policy's: below it a
penalty pushes the entropy back up, above it nothing changes, so the policy stays a cloud of variations around its
best architectures (each sample differs from the most likely architecture in a few decisions), which keeps it
improving. `target_kl` stops an update's epochs early once the policy has moved that far (cleanrl's early
stopping). Per-decision ratios, the floor and early stopping depart from NASNet, whose controller the paper reuses;
the `nasnet` preset (PPOConfig's defaults) has none of them. configs/default.yaml turns them on, and BENCHMARKS.md
("Controller against evolution on interacting decisions") measures both settings against regularized evolution.

The controller only knows `choice_counts`, one int a decision; it imports neither the model builder, the trainer,
the workers nor Ray. Its state (weights, Adam slots, baseline, sampling RNG, pending children, the per-decision
log-probabilities of children in flight) round-trips exactly through `get_state` / `set_state` and `save` / `load`,
so a resumed search continues as if never stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import json
import os
from typing import Any, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from mnas.search.fileio import atomic_write
from mnas.search.settings import (BOOL, FRACTION, NONNEGATIVE_INT, NONNEGATIVE_NUMBER, OPTIONAL_POSITIVE_NUMBER,
                                  POSITIVE_INT, POSITIVE_NUMBER, Check, from_mapping, setting, validate)

tfd = tfp.distributions

STATE_VERSION = 1
# Config fields that fix the shapes of the weights: a state can only be restored into the same shapes.
_SHAPE_FIELDS = ("lstm_units", "lstm_layers", "embedding_dim")
_STATE_KEYS = ("choice_counts", "config", "weights", "optimizer", "baseline", "step", "rng", "pending")
# Children drawn but not yet observed whose per-decision log-probabilities are remembered (ratio_per_decision):
# enough for every child in flight on a large cluster; beyond it the oldest are forgotten (see the module docstring).
DRAWN_LIMIT = 512


_ENTROPY_FLOOR = Check(lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1),
                       "null or a fraction in (0, 1] of the uniform policy's entropy")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of the controller and its PPO update."""

    lstm_units: int = setting(100, POSITIVE_INT)
    """Hidden units per LSTM layer (NASNet: 100)."""
    lstm_layers: int = setting(1, POSITIVE_INT)
    """Stacked LSTM layers (NASNet: 1)."""
    embedding_dim: int = setting(100, POSITIVE_INT)
    """Size of the embedding of the previous choice fed to the LSTM (ENAS uses the LSTM size; so do we)."""
    learning_rate: float = setting(3.5e-4, POSITIVE_NUMBER)
    """Adam learning rate (NASNet: 3.5e-4)."""
    clip: float = setting(0.2, POSITIVE_NUMBER)
    """PPO clipping epsilon of the probability ratio (cleanrl and the PPO paper: 0.2; NASNet does not say)."""
    entropy_weight: float = setting(1e-5, NONNEGATIVE_NUMBER)
    """Weight of the entropy bonus, on the summed entropy of a sampled sequence as in ENAS (NASNet: 1e-5)."""
    baseline_decay: float = setting(0.95, FRACTION)
    """Decay of the exponential moving-average reward baseline (NASNet: 0.95)."""
    batch_size: int = setting(10, POSITIVE_INT)
    """Completed children per PPO update (our choice: small, so the policy moves often on a slow search)."""
    update_epochs: int = setting(4, POSITIVE_INT)
    """Gradient steps on each batch (cleanrl: 4); the clipping keeps later epochs near the old policy."""
    max_grad_norm: float = setting(0.5, POSITIVE_NUMBER)
    """Global gradient-norm clipping (cleanrl: 0.5)."""
    init_range: float = setting(0.1, POSITIVE_NUMBER)
    """Weights start uniform in [-init_range, init_range], so the first policy is near uniform (ENAS: 0.1)."""
    temperature: float = setting(1.0, POSITIVE_NUMBER)
    """Logits are divided by this before the tanh clipping, as in the public ENAS controller; 1.0: unchanged."""
    tanh_constant: float | None = setting(None, OPTIONAL_POSITIVE_NUMBER)
    """If set, logits become tanh_constant * tanh(logits), bounding how sure the policy gets (ENAS); None: off."""
    normalize_advantages: bool = setting(False, BOOL)
    """Standardize each batch's advantages (cleanrl's norm_adv). NASNet does not; but proxy rewards of a small
    search often differ by a few hundredths, and raw advantages that small barely move the policy."""
    ratio_per_decision: bool = setting(False, BOOL)
    """One PPO ratio per decision, each clipped on its own, instead of one per architecture (module docstring). Off
    (NASNet's preset, and how this controller began): clipping the architecture's ratio leaves each of its decisions
    a tiny share of the trust region, so the policy learns slowly. On: PPO as it is run on token sequences."""
    target_kl: float | None = setting(None, OPTIONAL_POSITIVE_NUMBER)
    """Stop an update's epochs once the approximate KL divergence of the policy from the one that began the update
    exceeds this, in nats over a whole architecture (cleanrl's target_kl): with per-decision ratios the clipping
    bounds each decision, not the architecture, and this bounds the whole. None: always update_epochs epochs."""
    entropy_floor: float | None = setting(None, _ENTROPY_FLOOR)
    """A floor on the policy's mean entropy per decision, as a fraction of the uniform policy's; below it a penalty
    pushes the entropy back up, above it nothing (module docstring). None: no floor, as NASNet, whose policy may
    collapse onto one architecture and stop finding better ones."""
    entropy_floor_weight: float = setting(10.0, POSITIVE_NUMBER)
    """Weight of that penalty, per nat below the floor. Large next to standardized advantages (about 1 each), so the
    floor holds against the policy gradient's pull toward certainty."""
    seed: int = setting(0, NONNEGATIVE_INT)
    """Seeds the initial weights and the sampling RNG: same seed and same observations, same search."""

    def __post_init__(self):
        validate(self, "PPO config")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PPOConfig":
        """The inverse of `dataclasses.asdict`; an unknown field is a ValueError naming it.

        A state saved before a field existed lacks it and gets the field's default, which is the behaviour it was
        saved with: every field added later defaults to off."""
        return from_mapping(cls, data, "PPO config")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None, seed: int = 0) -> "PPOConfig":
        """A config file's `controller:` section: PPOConfig fields, on top of a named preset if it has `preset`.

        `{preset: nasnet, batch_size: 20}` is NASNet's settings with batches of 20. `seed` applies unless the
        section sets its own.
        """
        _require(settings is None or isinstance(settings, Mapping),
                 f"controller: the settings must be a mapping, got {settings!r}")
        settings = dict(settings or {})
        name = settings.pop("preset", None)
        _require(name is None or (isinstance(name, str) and name in PRESETS),
                 f"controller: unknown preset {name!r} (known: {', '.join(PRESETS)})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        _require(not unknown, f"controller: unknown setting(s) {', '.join(map(str, unknown))} "
                              f"(known: preset, {', '.join(sorted(known))})")
        merged = {"seed": seed, **(PRESETS[name] if name else {}), **settings}
        return cls(**merged)


PRESETS: dict[str, dict[str, Any]] = {
    # PPOConfig's defaults are NASNet's (Zoph et al., CVPR 2018) where NASNet states them: LSTM of 100 units,
    # Adam 3.5e-4, entropy weight 1e-5, baseline decay 0.95; one ratio per architecture, no floor, no early stop.
    "nasnet": {},
}
"""Named controller settings for a config's `controller: {preset: NAME}`."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sampled architecture: its choice indices and its log-probability when it was drawn."""

    indices: list[int]
    log_prob: float


class _Policy(tf.Module):
    """The LSTM policy's weights and the two ways to run it: step by step (sampling) and teacher-forced (PPO).

    Decisions have different numbers of options; to handle them as one batch, every decision's logits are padded
    to the largest count and the padding is masked to a logit of -1e9 (probability exactly 0 in float32, zero
    gradient). Option k of decision t is column `offset_t + k` of the head matrix and row `offset_t + k` of the
    embedding table, so no parameter exists for a padded option.
    """

    def __init__(self, choice_counts: Sequence[int], config: PPOConfig):
        super().__init__(name="controller_policy")
        self.counts = list(choice_counts)
        self.config = config
        offsets = np.cumsum([0] + self.counts[:-1])
        width = max(self.counts)
        self.offsets = tf.constant(offsets, tf.int32)
        # columns[t, k]: the head column of option k of decision t (padding points at a real column, then masked).
        self.columns = tf.constant([[o + min(k, n - 1) for k in range(width)] for o, n in zip(offsets, self.counts)],
                                   tf.int32)
        self.mask = tf.constant([[k < n for k in range(width)] for n in self.counts])
        total, units = sum(self.counts), config.lstm_units
        rng = np.random.default_rng([config.seed, 0])  # its own stream: init never shifts the sampling RNG

        def uniform(shape):
            return rng.uniform(-config.init_range, config.init_range, size=shape).astype(np.float32)

        # The last embedding row is the learned start token.
        self.weights: dict[str, tf.Variable] = {
            "embedding": tf.Variable(uniform([total + 1, config.embedding_dim]), name="embedding")}
        for layer in range(config.lstm_layers):
            fan_in = (config.embedding_dim if layer == 0 else units) + units
            self.weights[f"lstm{layer}/kernel"] = tf.Variable(uniform([fan_in, 4 * units]), name=f"lstm{layer}_kernel")
            self.weights[f"lstm{layer}/bias"] = tf.Variable(tf.zeros([4 * units]), name=f"lstm{layer}_bias")
        self.weights["head/kernel"] = tf.Variable(uniform([units, total]), name="head_kernel")
        self.weights["head/bias"] = tf.Variable(tf.zeros([total]), name="head_bias")
        self.variable_list = list(self.weights.values())

    def _lstm(self, x, state):
        """One step of the stacked LSTM; returns the top layer's output and the new (h, c) per layer."""
        new_state = []
        for layer, (h, c) in enumerate(state):
            z = tf.matmul(tf.concat([x, h], 1), self.weights[f"lstm{layer}/kernel"]) + self.weights[f"lstm{layer}/bias"]
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            new_state.append((h, c))
            x = h
        return x, new_state

    def _initial(self, batch):
        zeros = tf.zeros([batch, self.config.lstm_units])
        return [(zeros, zeros) for _ in range(self.config.lstm_layers)], self.weights["embedding"][-1]

    def _heads(self):
        """Every decision's softmax head, padded: kernels [T, U, width] and biases [T, width]."""
        kernels = tf.transpose(tf.gather(self.weights["head/kernel"], self.columns, axis=1), [1, 0, 2])
        return kernels, tf.gather(self.weights["head/bias"], self.columns)

    def _finish_logits(self, logits, mask):
        """Temperature and tanh clipping (ENAS), then the padding mask."""
        logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * tf.tanh(logits)
        return tf.where(mask, logits, -1e9)

    def sequential(self, choose, seeds):
        """Runs one sequence step by step, feeding each choice to the next step.

        A symbolic loop (tf.scan) rather than a Python one: the graph stays the same size whatever the number of
        decisions, so it traces in a fraction of a second instead of seconds.

        Args:
            choose: `choose(logits [1, width], seed [2]) -> choice [1] int32`.
            seeds: [T, 2] int32, one stateless seed a decision.

        Returns:
            choices [T] int32 and padded logits [T, width].
        """
        state, start = self._initial(1)
        first = (state, start[None], tf.zeros([1], tf.int32), tf.zeros([1, self.mask.shape[1]]))
        kernels, biases = self._heads()

        def step(carry, decision):
            state, x = carry[0], carry[1]
            kernel, bias, mask, offset, seed = decision
            output, state = self._lstm(x, state)
            logits = self._finish_logits(tf.matmul(output, kernel) + bias, mask)
            choice = choose(logits, seed)
            return state, tf.gather(self.weights["embedding"], choice + offset), choice, logits

        decisions = (kernels, biases, self.mask, self.offsets, seeds)
        _, _, choices, logits = tf.scan(step, decisions, initializer=first)
        return choices[:, 0], logits[:, 0]

    def teacher_forced(self, indices):
        """Padded logits [B, T, width] of every decision given the earlier choices in `indices` [B, T]."""
        batch = tf.shape(indices)[0]
        state, start = self._initial(batch)
        inputs = tf.gather(self.weights["embedding"], tf.transpose(indices[:, :-1]) + self.offsets[:-1, None])
        inputs = tf.concat([tf.tile(start[None, None], [1, batch, 1]), inputs], 0)  # [T, B, E]
        states = tf.scan(lambda state, x: self._lstm(x, state)[1], inputs, initializer=state)
        outputs = states[-1][0]  # the top layer's h at every step: [T, B, U]
        kernels, biases = self._heads()
        return self._finish_logits(tf.einsum("tbu,tuw->btw", outputs, kernels) + biases, self.mask)


class Controller:
    """Samples architectures as choice indices and learns from their rewards with PPO.

    Typical use (the Ray Tune searcher does this per trial)::

        ctrl = Controller(space.choice_counts)
        s = ctrl.sample()                                   # keep s.log_prob with the child
        ...train and measure the child...
        stats = ctrl.observe(s.indices, s.log_prob, reward)  # a dict after every batch_size children
    """

    def __init__(self, choice_counts: Sequence[int], config: PPOConfig | None = None):
        self.choice_counts = _check_counts(choice_counts)
        self.config = config if config is not None else PPOConfig()
        _require(isinstance(self.config, PPOConfig), f"config must be a PPOConfig, got {self.config!r}")
        _require(keras.backend.backend() == "tensorflow", "the controller needs Keras' TensorFlow backend "
                 f"(its Adam updates tf.Variables), but KERAS_BACKEND is {keras.backend.backend()!r}")
        self._policy = _Policy(self.choice_counts, self.config)
        self._optimizer = keras.optimizers.Adam(learning_rate=self.config.learning_rate)
        self._optimizer.build(self._policy.variable_list)
        self._rng = np.random.Generator(np.random.PCG64([self.config.seed, 1]))
        # (indices, log_prob, reward, per-decision log-probs at sampling time or None)
        self._pending: list[tuple[list[int], float, float, np.ndarray | None]] = []
        # Children drawn and not yet observed, oldest first: (indices, log_prob, per-decision log-probs).
        self._drawn: list[tuple[tuple[int, ...], float, np.ndarray]] = []
        self.step = 0
        """Number of PPO updates done."""
        self.baseline: float | None = None
        """Moving-average reward baseline; None until the first update sets it to that batch's mean reward."""
        self._uniform_entropy = float(np.mean(np.log(self.choice_counts)))  # nats a decision, the floor's unit
        self._build_functions()

    # -- graphs
    def _build_functions(self):
        """Wraps the graph builders in tf.functions; fixed signatures trace each once (no XLA: slower on CPU)."""
        steps = len(self.choice_counts)
        graph = functools.partial(tf.function, autograph=False)  # no Python control flow on tensors to convert
        self._sample_fn = graph(self._sample_graph, input_signature=[tf.TensorSpec([2], tf.int32)])
        self._greedy_fn = graph(self._greedy_graph)
        self._log_prob_fn = graph(self._log_prob_graph, input_signature=[tf.TensorSpec([None, steps], tf.int32)])
        self._train_fn = graph(self._train_graph, input_signature=[
            tf.TensorSpec([None, steps], tf.int32), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None, steps], tf.float32), tf.TensorSpec([None, steps], tf.float32),
            tf.TensorSpec([None], tf.float32)])

    def _sample_graph(self, seed):
        seeds = tf.random.experimental.stateless_split(seed, num=len(self.choice_counts))

        def draw(logits, seed):
            return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]

        choices, logits = self._policy.sequential(draw, seeds)
        decision_log_probs = tfd.Categorical(logits=logits).log_prob(choices)
        return choices, tf.reduce_sum(decision_log_probs), decision_log_probs

    def _greedy_graph(self):
        unused_seeds = tf.zeros([len(self.choice_counts), 2], tf.int32)
        choices, logits = self._policy.sequential(
            lambda logits, seed: tf.argmax(logits, 1, output_type=tf.int32), unused_seeds)
        return choices, tf.reduce_mean(tfd.Categorical(logits=logits).entropy())

    def _log_prob_graph(self, indices):
        """Per-decision log-probabilities [B, T] of architectures `indices` [B, T]."""
        return tfd.Categorical(logits=self._policy.teacher_forced(indices)).log_prob(indices)

    def _train_graph(self, indices, old_log_prob, old_decision_log_prob, start_log_prob, advantages):
        """One PPO gradient step (cleanrl's names) on a batch of architectures, one ratio per architecture or per
        decision; every decision carries its architecture's advantage.

        `old_*` are the log-probabilities the children were drawn with (PPO's pi_old); `start_log_prob` [B, T] is
        what the policy gave them when this update began, the reference of approx_kl: children drawn before the
        previous update would otherwise count that update's movement against this one."""
        config, variables = self.config, self._policy.variable_list
        steps = len(self.choice_counts)
        with tf.GradientTape() as tape:
            dist = tfd.Categorical(logits=self._policy.teacher_forced(indices))
            entropy = dist.entropy()  # [B, T]
            decision_log_prob = dist.log_prob(indices)  # [B, T]
            if config.ratio_per_decision:
                logratio = decision_log_prob - old_decision_log_prob  # [B, T]
                advantage = advantages[:, None]
            else:
                logratio = tf.reduce_sum(decision_log_prob, 1) - old_log_prob  # [B]
                advantage = advantages
            ratio = tf.exp(logratio)
            pg_loss1 = -advantage * ratio
            pg_loss2 = -advantage * tf.clip_by_value(ratio, 1 - config.clip, 1 + config.clip)
            pg_loss = tf.reduce_mean(tf.maximum(pg_loss1, pg_loss2))
            if config.ratio_per_decision:
                pg_loss *= steps  # a sum over decisions, like the architecture's log-probability: same gradient
            sequence_entropy = tf.reduce_mean(tf.reduce_sum(entropy, 1))
            loss = pg_loss - config.entropy_weight * sequence_entropy
            if config.entropy_floor is not None:
                floor = config.entropy_floor * self._uniform_entropy
                loss += config.entropy_floor_weight * tf.nn.relu(floor - tf.reduce_mean(entropy))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]  # embedding rows come sparse
        grads, grad_norm = tf.clip_by_global_norm(grads, config.max_grad_norm)
        self._optimizer.apply_gradients(zip(grads, variables))
        moved = tf.stop_gradient(decision_log_prob) - start_log_prob
        kl = tf.reduce_sum(tf.exp(moved) - 1 - moved, 1)  # k3 per decision, summed: the architecture's KL (chain rule)
        return {
            "loss": loss,
            "pg_loss": pg_loss,
            "entropy": tf.reduce_mean(entropy),
            "approx_kl": tf.reduce_mean(kl),
            "clipfrac": tf.reduce_mean(tf.cast(tf.abs(ratio - 1) > config.clip, tf.float32)),
            "grad_norm": grad_norm,
            "ratio_dev": tf.reduce_max(tf.abs(ratio - 1)),
        }

    # -- the searcher's API
    def sample(self) -> Sample:
        """Draws one architecture from the current policy (advances the sampling RNG)."""
        seed = self._rng.integers(0, 2**31 - 1, size=2, dtype=np.int64).astype(np.int32)
        choices, log_prob, decision_log_probs = self._sample_fn(tf.constant(seed))
        sample = Sample(indices=[int(c) for c in choices.numpy()], log_prob=float(log_prob.numpy()))
        if self.config.ratio_per_decision:
            self._drawn.append((tuple(sample.indices), sample.log_prob, decision_log_probs.numpy()))
            del self._drawn[:-DRAWN_LIMIT]
        return sample

    def greedy(self) -> list[int]:
        """The most probable choice at every step, each conditioned on the previous argmax choices."""
        return [int(c) for c in self._greedy_fn()[0].numpy()]

    def entropy(self) -> float:
        """Mean per-decision entropy (nats) along the greedy sequence: cheap, and it leaves the RNG alone."""
        return float(self._greedy_fn()[1].numpy())

    def log_prob(self, indices: Sequence[int]) -> float:
        """Log-probability of an architecture under the current policy."""
        indices = self._check_indices(indices)
        return float(tf.reduce_sum(self._log_prob_fn(tf.constant([indices], tf.int32))[0]).numpy())

    def observe(self, indices: Sequence[int], log_prob: float, reward: float) -> dict | None:
        """Adds a completed child to the pending batch; runs a PPO update when the batch is full.

        Args:
            indices: the child's choice indices, as sampled.
            log_prob: the `Sample.log_prob` it was drawn with; PPO's pi_old, even if the policy moved since.
            reward: its reward (a failed child's reward too: see `search.reward`).

        Returns:
            The update's diagnostics when this child completed a batch, else None.
        """
        indices = self._check_indices(indices)
        _require(_is_real(log_prob) and np.isfinite(log_prob) and log_prob <= 0,
                 f"log_prob must be a finite number <= 0 (the sample's log-probability), got {log_prob!r}")
        _require(_is_real(reward) and np.isfinite(reward),
                 f"reward must be a finite number (give failed children the failed reward), got {reward!r}")
        self._pending.append((indices, float(log_prob), float(reward), self._recall(indices, float(log_prob))))
        if len(self._pending) >= self.config.batch_size:
            return self.update()
        return None

    def _recall(self, indices: list[int], log_prob: float) -> np.ndarray | None:
        """The per-decision log-probabilities this child was drawn with, forgotten once recalled; None if unknown.

        A child is known by its indices and its log-probability: two draws that agree in both came from the same
        policy (or from policies that agree on them), so either one's values serve."""
        key = tuple(indices)
        for position, (drawn, drawn_log_prob, values) in enumerate(self._drawn):
            if drawn == key and drawn_log_prob == log_prob:
                del self._drawn[position]
                return values
        return None

    @property
    def pending(self) -> int:
        """Completed children waiting for the next update."""
        return len(self._pending)

    def update(self) -> dict:
        """Runs a PPO update on the pending children, however many; an empty dict if there are none.

        The advantage is reward - baseline with the baseline as it was before this batch (standardized over the
        batch with `normalize_advantages`); the baseline then follows each reward in arrival order (the first
        batch sets it to its mean reward instead). Up to `update_epochs` gradient steps, fewer with `target_kl`.

        Returns:
            From the last epoch run: step, pg_loss, entropy (mean per decision), approx_kl (of the policy before
            that epoch's step from the policy that began the update, in nats over whole architectures), clipfrac
            (of architectures, or of decisions with `ratio_per_decision`), grad_norm, loss. Also: epochs (run),
            baseline (after the update), mean_reward, batch_size; and first_ratio_dev, the largest |ratio - 1|
            before any gradient step: about 0 (float rounding, < 1e-4) for children drawn from the current policy,
            clearly > 0 for stale ones.
        """
        if not self._pending:
            return {}
        batch = list(self._pending)
        indices = tf.constant([b[0] for b in batch], tf.int32)
        old_log_prob = tf.constant([b[1] for b in batch], tf.float32)
        start_log_prob = self._log_prob_fn(indices)  # [B, T], the policy as this update begins
        old_decision_log_prob = tf.constant(self._old_decision_log_probs(batch, start_log_prob.numpy()), tf.float32)
        rewards = np.array([b[2] for b in batch], np.float64)
        first_batch = self.baseline is None
        if first_batch:
            self.baseline = float(rewards.mean())
        advantages = rewards - self.baseline
        if self.config.normalize_advantages and len(batch) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        advantages = tf.constant(advantages, tf.float32)
        first_ratio_dev = None
        for epoch in range(1, self.config.update_epochs + 1):
            metrics = self._train_fn(indices, old_log_prob, old_decision_log_prob, start_log_prob, advantages)
            if first_ratio_dev is None:
                first_ratio_dev = float(metrics["ratio_dev"])
            if self.config.target_kl is not None and float(metrics["approx_kl"]) > self.config.target_kl:
                break  # as cleanrl: measured before the epoch's step, so that step is the last
        if not first_batch:
            for reward in rewards:
                self.baseline = self.config.baseline_decay * self.baseline + (1 - self.config.baseline_decay) * reward
        self.step += 1
        self._pending = []
        stats = {name: float(value) for name, value in metrics.items() if name != "ratio_dev"}
        stats.update(step=self.step, baseline=float(self.baseline), mean_reward=float(rewards.mean()),
                     batch_size=len(batch), first_ratio_dev=first_ratio_dev, epochs=epoch)
        return stats

    def _old_decision_log_probs(self, batch, current: np.ndarray) -> np.ndarray:
        """pi_old per decision [B, T]: the values each child was drawn with; for a child whose values are unknown,
        the `current` ones shifted evenly to sum to its stored log-probability (exact when the policy has not moved
        since it was drawn). Zeros when the ratio is per architecture, which never reads them."""
        steps = len(self.choice_counts)
        if not self.config.ratio_per_decision:
            return np.zeros([len(batch), steps], np.float32)
        rows = []
        for row, (_, log_prob, _, values) in enumerate(batch):
            if values is None:
                values = current[row] + (log_prob - float(current[row].sum())) / steps
            rows.append(np.asarray(values, np.float32))
        return np.stack(rows)

    # -- state
    def get_state(self) -> dict:
        """Everything needed to continue exactly, as plain Python and numpy values (copies).

        `optimizer` lists Keras Adam's variables in its order: iteration count, learning rate, then the first and
        second moments of each weight in `weights` order. `drawn` lists the children drawn and not yet observed
        whose per-decision log-probabilities are remembered (`ratio_per_decision` only; a state without it, from
        before it existed, restores with none remembered).
        """
        return {
            "version": STATE_VERSION,
            "choice_counts": list(self.choice_counts),
            "config": dataclasses.asdict(self.config),
            "weights": {name: np.array(v.numpy()) for name, v in self._policy.weights.items()},
            "optimizer": [np.array(v.numpy()) for v in self._optimizer.variables],
            "baseline": self.baseline,
            "step": self.step,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "pending": [{"indices": list(i), "log_prob": lp, "reward": r, "decision_log_probs": _floats(values)}
                        for i, lp, r, values in self._pending],
            "drawn": [{"indices": list(i), "log_prob": lp, "decision_log_probs": _floats(values)}
                      for i, lp, values in self._drawn],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a `get_state` result exactly; the saved config replaces this controller's.

        Everything is checked before anything is assigned, so a bad state leaves the controller as it was.

        Raises:
            ValueError: the state is for other choice counts or other weight shapes, or is malformed.
        """
        _require(isinstance(state, Mapping) and state.get("version") == STATE_VERSION,
                 f"not a controller state of version {STATE_VERSION}")
        missing = [key for key in _STATE_KEYS if key not in state]
        _require(not missing, f"controller state lacks {', '.join(missing)}")
        counts = list(state["choice_counts"])
        _require(counts == self.choice_counts, f"controller state was saved for choice_counts {counts} "
                 f"but this controller has choice_counts {self.choice_counts}")
        config = PPOConfig.from_dict(state["config"])
        for name in _SHAPE_FIELDS:
            _require(getattr(config, name) == getattr(self.config, name),
                     f"controller state has {name}={getattr(config, name)} but this controller has "
                     f"{name}={getattr(self.config, name)}")
        weights = _match_arrays(self._policy.weights, state["weights"], "weights")
        slots = _match_arrays(dict(enumerate(self._optimizer.variables)), dict(enumerate(state["optimizer"])),
                              "optimizer")
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = copy.deepcopy(dict(state["rng"]))
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"controller state: bad sampling RNG state ({err})") from None
        pending = [(self._check_indices(p["indices"]), float(p["log_prob"]), float(p["reward"]),
                    self._check_decision_log_probs(p.get("decision_log_probs"), optional=True))
                   for p in state["pending"]]
        drawn = [(tuple(self._check_indices(d["indices"])), float(d["log_prob"]),
                  self._check_decision_log_probs(d["decision_log_probs"], optional=False))
                 for d in state.get("drawn", [])]
        for variable, value in weights + slots:
            variable.assign(value)
        self._rng = rng
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.step = int(state["step"])
        self._pending = pending
        self._drawn = drawn
        if config != self.config:
            self.config = config
            self._policy.config = config
            self._build_functions()  # hyperparameters are constants in the traced graphs

    def save(self, path: str | os.PathLike) -> None:
        """Writes the state to `path` (an .npz file) atomically: a crash leaves the old file or the new one."""
        state = self.get_state()
        arrays = {f"weights/{name}": value for name, value in state.pop("weights").items()}
        arrays.update({f"optimizer/{i:04d}": value for i, value in enumerate(state.pop("optimizer"))})
        arrays["meta"] = np.array(json.dumps(state))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Controller":
        """A controller restored from `save`, built with the saved choice counts and config."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            state = json.loads(str(data["meta"]))
            state["weights"] = {key[len("weights/"):]: data[key] for key in data.files if key.startswith("weights/")}
            state["optimizer"] = [data[key] for key in sorted(k for k in data.files if k.startswith("optimizer/"))]
        controller = cls(state["choice_counts"], PPOConfig.from_dict(state["config"]))
        controller.set_state(state)
        return controller

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        indices = list(indices)
        _require(len(indices) == len(self.choice_counts),
                 f"indices have {len(indices)} choices but the controller has {len(self.choice_counts)} decisions")
        for t, (index, count) in enumerate(zip(indices, self.choice_counts)):
            _require(_is_int(index) and 0 <= index < count,
                     f"index {index!r} of decision {t} is out of range 0..{count - 1}")
        return [int(i) for i in indices]

    def _check_decision_log_probs(self, values, optional: bool) -> np.ndarray | None:
        if values is None and optional:
            return None
        try:
            array = np.asarray(values, np.float32) if isinstance(values, (list, tuple, np.ndarray)) else None
        except (TypeError, ValueError):
            array = None
        _require(array is not None and array.shape == (len(self.choice_counts),) and np.all(array <= 0),
                 f"controller state: decision_log_probs must be {len(self.choice_counts)} numbers <= 0, got {values!r}")
        return array

    def __repr__(self) -> str:
        return (f"Controller({len(self.choice_counts)} decisions, step={self.step}, baseline={self.baseline}, "
                f"pending={len(self._pending)})")


def _match_arrays(variables: Mapping, values: Mapping, what: str) -> list[tuple[tf.Variable, np.ndarray]]:
    """Pairs each variable with its saved value, checking names and shapes."""
    _require(isinstance(values, Mapping) and set(values) == set(variables),
             f"controller state: {what} has entries {sorted(values) if isinstance(values, Mapping) else values!r}, "
             f"expected {sorted(variables)}")
    pairs = []
    for name, variable in variables.items():
        value = np.asarray(values[name])
        _require(tuple(value.shape) == tuple(variable.shape),
                 f"controller state: {what}[{name!r}] has shape {value.shape}, expected {tuple(variable.shape)}")
        dtype = getattr(variable.dtype, "as_numpy_dtype", variable.dtype)  # tf.DType, or Keras' dtype name
        pairs.append((variable, value.astype(dtype)))
    return pairs


def _floats(values: np.ndarray | None) -> list[float] | None:
    """float32 values as Python floats (exact both ways): JSON-friendly, for the state."""
    return None if values is None else [float(v) for v in values]


def _check_counts(choice_counts: Sequence[int]) -> list[int]:
    counts = list(choice_counts)
    _require(counts, "choice_counts is empty: the controller needs at least one decision")
    for t, count in enumerate(counts):
        _require(_is_int(count) and count >= 1, f"choice_counts[{t}] must be a positive integer, got {count!r}")
    return [int(c) for c in counts]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _require(condition, message: str) -> None:
    """ValueError with `message` unless `condition`: the project's errors are ValueErrors, never asserts."""
    if not condition:
        raise ValueError(message)
