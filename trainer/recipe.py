"""The full-training recipe of MnasNet: optimizer, learning-rate schedule, regularisation, weight averaging.

Defaults are the paper's (Tan et al., CVPR 2019, Sec. 6) and the official trainer's (tensorflow/tpu,
models/official/mnasnet/mnasnet_main.py and utils.py): RMSProp with decay 0.9, momentum 0.9 and epsilon 1e-3;
learning rate 0.016 per 256 images, scaled linearly with the batch size, warmed up linearly over 5 epochs, then
multiplied by 0.97 every 2.4 epochs (a staircase counted from step 0, as the official `build_learning_rate`
does); weight decay 1e-5 as an L2 penalty added to the loss on every weight except batch norm's; label smoothing
0.1; batch-norm momentum 0.99; dropout 0.2 before the classifier (the architecture's own value); and an
exponential moving average of the weights, decay 0.9999, used for evaluation and export.

Short runs. The official trainer builds its average with `tf.train.ExponentialMovingAverage(decay,
num_updates=global_step)`, whose effective decay at step t is min(decay, (1 + t) / (10 + t)). This module keeps
that rule, and it is what makes the 0.9999 default usable for runs of a few epochs: the cap 0.9999 binds only
after ~90,000 steps; before, the average spans roughly the last t / 9 steps (the last ~11% of the run), so a
1,000-step run averages about its last 110 steps rather than staying near its random initialisation. A run that
wants a fixed window passes `ema_decay` (e.g. 0.999 for ~1,000 steps); 0 turns the average off. The warm-up is
the other value that does not fit short runs: 5 epochs would leave a 3-epoch run below its peak learning rate,
so the warm-up is min(warmup_epochs, epochs / 10) -- the paper's 5 for any run of 50 epochs or more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Hyperparameters of full training; every field is a command-line override of `launch.py train`."""

    base_lr: float = 0.016
    """Peak learning rate per `lr_batch` images; the run's peak is base_lr * batch_size / lr_batch, batch_size being
    the global batch -- every replica's images of one step together (trainer.distributed)."""
    lr_batch: int = 256
    warmup_epochs: float = 5.0
    """Linear warm-up from 0, capped at a tenth of the run (see the module docstring)."""
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    rho: float = 0.9
    """RMSProp's decay of the squared-gradient average (the paper's 'decay 0.9')."""
    momentum: float = 0.9
    epsilon: float = 1e-3
    weight_decay: float = 1e-5
    """L2 penalty weight_decay * sum(w^2) / 2 over non-batch-norm weights, added to the loss (official)."""
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999
    """Cap of the weight average's decay, with the official num_updates warm-up; 0 disables the average."""
    bn_momentum: float = 0.99
    dropout: float | None = None
    """Dropout before the classifier; None keeps the architecture's (0.2 for MnasNet-A1, 0 for mnasnet-small)."""

    def __post_init__(self):
        for name in ("base_lr", "decay_rate", "decay_epochs", "epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise ValueError(f"recipe: {name} must be a positive number, got {value!r}")
        if not isinstance(self.lr_batch, int) or self.lr_batch < 1:
            raise ValueError(f"recipe: lr_batch must be a positive integer, got {self.lr_batch!r}")
        for name in ("warmup_epochs", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"recipe: {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("rho", "momentum", "label_smoothing", "ema_decay", "bn_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"recipe: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"recipe: dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"recipe: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def peak_lr(self, batch_size: int) -> float:
        """The paper's linear scaling; `batch_size` is the global batch, on one device or many."""
        return self.base_lr * batch_size / self.lr_batch

    def warmup(self, epochs: int) -> float:
        return min(self.warmup_epochs, epochs / 10)


def learning_rate(step, peak: float, steps_per_epoch: int, warmup_epochs: float, decay_rate: float,
                  decay_epochs: float):
    """The official schedule at `step` (a tensor or a number): staircase exponential decay from step 0,
    replaced by a linear ramp peak * step / warmup_steps during the warm-up."""
    import tensorflow as tf

    step = tf.cast(step, tf.float32)
    decay_steps = max(1.0, decay_epochs * steps_per_epoch)
    decayed = peak * tf.pow(decay_rate, tf.floor(step / decay_steps))
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps <= 0:
        return decayed
    return tf.where(step < warmup_steps, peak * step / warmup_steps, decayed)


def make_schedule(recipe: Recipe, batch_size: int, steps_per_epoch: int, epochs: int):
    """The learning rate as a Keras schedule (a function of the optimizer's step count, so it resumes with it)."""
    import keras

    args = dict(peak=recipe.peak_lr(batch_size), steps_per_epoch=steps_per_epoch,
                warmup_epochs=recipe.warmup(epochs), decay_rate=recipe.decay_rate, decay_epochs=recipe.decay_epochs)

    class MnasNetSchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return learning_rate(step, **args)

        def get_config(self):
            return dict(args)

    return MnasNetSchedule()


def make_optimizer(recipe: Recipe, schedule):
    """RMSProp as the paper sets it. Keras' RMSprop(rho, momentum, epsilon) follows TensorFlow 1's
    RMSPropOptimizer that the official trainer used (epsilon inside the square root's denominator sum)."""
    import keras

    return keras.optimizers.RMSprop(schedule, rho=recipe.rho, momentum=recipe.momentum, epsilon=recipe.epsilon)


def decayed_weights(model) -> list:
    """The weights the L2 penalty covers: trainable ones outside batch norm (official: names without
    'batch_normalization'), i.e. conv kernels, SE convs' kernels and biases, and the classifier."""
    import keras

    bn = {id(v) for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
          for v in layer.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in bn]


class WeightEMA:
    """Shadow copies of a model's float weights (trainable ones and batch norm's moving statistics, as the
    official `get_ema_vars`), averaged after every step with decay min(cap, (1 + t) / (10 + t)).

    The shadows are tf.Variables in `self.shadows`, in the order of `self.variables`: checkpoints save and
    restore them as they do the model's weights.
    """

    def __init__(self, model, decay: float):
        import tensorflow as tf

        self.decay = float(decay)
        self.variables = [v for v in model.variables if "float" in str(v.dtype)]  # not the dropout seed state
        self.shadows = [tf.Variable(v.value, trainable=False, name=f"ema_{i}") for i, v in enumerate(self.variables)]

    def update(self, step) -> None:
        """Averages in the current weights; `step` is the number of optimizer updates so far (a tensor)."""
        import tensorflow as tf

        t = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for shadow, variable in zip(self.shadows, self.variables):
            shadow.assign_sub((1.0 - decay) * (shadow - tf.convert_to_tensor(variable.value)))

    @contextlib.contextmanager
    def swapped(self):
        """The model holds the averaged weights inside the block, its own weights again after it."""
        saved = [v.numpy() for v in self.variables]
        try:
            for shadow, variable in zip(self.shadows, self.variables):
                variable.assign(shadow)
            yield
        finally:
            for value, variable in zip(saved, self.variables):
                variable.assign(value)
