"""The proxy task's definition: its settings, and how a child is adapted to it. Pure Python, no TensorFlow.

The paper (Tan et al., CVPR 2019, Sec. 5) trains every sampled model for 5 epochs on ImageNet and scores it on
50K images held out from the *training* set. With no ImageNet and 2 CPU cores, the embedded default is a
smaller stand-in chosen by measurement (BENCHMARKS.md, proxy task): a short training on a subset of
Fashion-MNIST's training images, scored on other training images; the test split is never read, so it stays
clean for final models.

What the proxy trains is `proxy_architecture(arch, proxy)`, not `arch`: latency and the reported multiply-adds
belong to the deployment architecture at its deployment resolution. `blind_spots` lists the decisions of a space
that this adaptation cannot tell apart. Training and scoring the adapted child is `workers.proxy`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mnas.search.counts import profile, residual_kind
from mnas.search.settings import (BOOL, FRACTION, INT, NAME, NONNEGATIVE_NUMBER, OPTIONAL_PATH, OPTIONAL_POSITIVE_INT,
                                  POSITIVE_INT, POSITIVE_NUMBER, from_mapping, one_of, setting, validate)
from mnas.search.arch import SKIP_NONE, SKIP_POOL, Architecture, Block, round_filters
from mnas.search.space import SearchSpace


_OPTIMIZERS = ("adam", "rmsprop", "sgd")
SPLITS = ("random", "file-order")


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """The proxy task's settings. The defaults were chosen by measurement on a 2-core machine; the figures are in
    BENCHMARKS.md (proxy task), not here, so that a new run changes one file."""

    dataset: str = setting("fashion-mnist", NAME)
    """A dataset of the data layer (`trainer.splits`, the one the trainer reads): fashion-mnist, cifar, cifar100,
    npz (any arrays file), folder (DIR/<class>/ images, or DIR/train/ and DIR/val/) or imagenet (TFRecord shards
    in the official schema). Arrays are held in memory; folders and TFRecords stream from their files, and a
    worker reads only the images of its training subset and held-out sample."""
    data_dir: str | None = setting(None, OPTIONAL_PATH)
    """Folder of the dataset's files (for npz: the file, or its folder); None uses the dataset's default
    (Debian's /usr/share/datasets/... for Fashion-MNIST). folder, imagenet and npz need one."""
    num_classes: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    """Classifier width; null takes it from the data: 10 for Fashion-MNIST and CIFAR-10, 100 for CIFAR-100, an
    npz's largest label + 1, a folder's class folders, 1000 for ImageNet. A label that does not fit stops a
    search before its first child."""
    image_size: int = setting(28, POSITIVE_INT)
    """Side of the square images the proxy trains on; Fashion-MNIST's native 28 avoids resizing cost."""
    train_subset: int = setting(20000, POSITIVE_INT)
    """Training images used, drawn from the training split less the held-out sample (see `split`). 20,000 rather than
    10,000: the same children's accuracies then varied about half as much from one training seed to the next, for
    about 1.5x the CPU a child (BENCHMARKS.md, proxy task)."""
    heldout: int = setting(5000, POSITIVE_INT)
    """Training images held out for scoring, the same for every child, so accuracies compare (see `split`). The
    paper likewise scores on held-out training images (50,000 random ones of ImageNet), never on the test set."""
    split: str = setting("random", one_of(SPLITS))
    """How the held-out sample and the training subset are drawn from the training split. 'random': `heldout`
    images at random (seeded by `split_seed`), then `train_subset` at random from the rest -- the paper's way, and
    safe for a file sorted by class. 'file-order': the first `train_subset` images train and the last `heldout`
    score, unshuffled -- how the MNAS-Bench collection's children were trained (Fashion-MNIST's file is in random
    class order); a class-sorted file puts whole classes in the held-out slice, and a held-out sample of a single
    class is refused before any child trains."""
    split_seed: int = setting(0, INT)
    """Seed of the random split. It is not the training `seed`: every child of a search is trained and scored on
    the same images whatever its training seed, so their accuracies compare."""
    epochs: int = setting(1, POSITIVE_INT)
    """Passes over `train_subset`; ignored when `steps` is set."""
    steps: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    """If set, train for exactly this many batches (repeating the data as needed) instead of `epochs`."""
    batch_size: int = setting(64, POSITIVE_INT)
    """Images per training step; full batches only, so the train step is traced once."""
    optimizer: str = setting("rmsprop", one_of(_OPTIMIZERS))
    """'rmsprop' (the paper's: decay 0.9, momentum 0.9, epsilon 1e-3), 'adam' or 'sgd' (Nesterov momentum 0.9).
    RMSProp trained children furthest in one epoch (BENCHMARKS.md, proxy task); a proxy that leaves children
    half-trained ranks the optimizer's luck, not the architecture."""
    learning_rate: float = setting(0.002, POSITIVE_NUMBER)
    """Peak learning rate, cosine-decayed to zero over the run so the last weights are not a noisy snapshot.
    0.002 for 64 images is the paper's 0.016 per 256 halved, the best of the rates tried (BENCHMARKS.md, proxy
    task)."""
    weight_decay: float = setting(0.0, NONNEGATIVE_NUMBER)
    """Decoupled weight decay (AdamW style for 'adam'); 0 turns it off -- one epoch does not overfit."""
    width: float = setting(0.5, POSITIVE_NUMBER)
    """Depth multiplier of the proxy model, multiplying the architecture's own. Narrower saves little at these
    sizes, where per-op overhead dominates (BENCHMARKS.md, proxy task), so halving keeps most of the speed while
    every block keeps at least 8 filters to choose among."""
    strides_removed: int | tuple[str, ...] = ("stem", "b6")
    """Which stride-2 layers of the child become stride 1 in the proxy: a list of names, "stem" or "bK" (the
    first layer of block K, counted from 1), or a number N for the first N stride-2 layers (stem first, then
    blocks in order). A 224-pixel network halves its map 5 times; a 28-pixel image would shrink 28-14-7-4-2-1,
    and on 1x1 and 2x2 maps a 5x5 kernel computes exactly what a 3x3 does (every tap beyond the map's edge
    reads padding). The default removes the stem's stride, so blocks 1-4 see 1/4 of their deployment side
    (28-28-14-7 against 112-112-56-28), and block 6's, so blocks 4-7 all run on 4x4 maps, where every kernel
    choice of the space changes the function (`blind_spots` checks this for any space and setting). Block 6's
    stride was the cheapest of the strides that do this (BENCHMARKS.md, proxy task, the cost of each variant). A
    layer that loses its stride keeps the shortcut it has at its stride (see `_unstride`)."""
    filter_divisor: int = setting(4, POSITIVE_INT)
    """Filters of the proxy model are the deployment model's filters x `width`, rounded to a multiple of this
    (the official rule otherwise: never down by more than 10%). The deployment filters are multiples of 8, so
    at width 0.5 a divisor of 4 halves them exactly and distinct filter choices stay distinct; with 8, as in
    the official width scaling, 12/16/20 of a 24-filter block would all become 16."""
    bn_momentum: float = setting(0.9, FRACTION)
    """Batch-norm moving-average momentum of the proxy model (the deployment model uses 0.99). With 0.99 the
    moving statistics of a short run still weigh their initial values, and held-out accuracy measured with them
    fell below chance (BENCHMARKS.md); 0.9 forgets the start within ~50 steps."""
    threads: int = setting(1, POSITIVE_INT)
    """TensorFlow intra- and inter-op threads. A second thread speeds one child up by far less than 2x
    (BENCHMARKS.md, child throughput), so on 2 cores two 1-thread children at once finish more children per
    minute than one 2-thread child. TensorFlow
    fixes the pools at its first use in a process: later trials in the same actor keep the first value.
    Results are reproducible for a given thread count, not across counts (reductions change order)."""
    mixed_precision: bool = setting(False, BOOL)
    """Train in Keras' mixed_float16 (float16 compute, float32 weights, a scaled loss) on GPU workers: about twice
    the throughput on GPUs with tensor cores. It needs gpus_per_worker > 0: a CPU has no fast float16."""
    seed: int = setting(0, INT)
    """Seeds weights, dropout and the shuffling order; TensorFlow ops are made deterministic too."""

    def __post_init__(self):
        # The dataset's name is checked against the data layer where the data is read (`mnas search` reads it
        # before the first child): this module defines the task and imports nothing above `search`.
        validate(self, "proxy config")
        if self.batch_size > self.train_subset:
            raise ValueError(f"proxy config: batch_size {self.batch_size} exceeds train_subset {self.train_subset}")
        object.__setattr__(self, "strides_removed", _check_strides_removed(self.strides_removed))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ProxyConfig":
        """Builds a config from a (YAML) mapping; unknown keys raise ValueError naming them."""
        return from_mapping(cls, data, "proxy config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of one child: `steps`, or full batches of `train_subset` times `epochs`."""
        return self.steps or self.train_subset // self.batch_size * self.epochs

    def replace(self, **changes) -> "ProxyConfig":
        return dataclasses.replace(self, **changes)




def _check_strides_removed(value: Any) -> int | tuple[str, ...]:
    """A count (int >= 0) or a tuple of layer names ("stem", "bK"); ValueError naming the bad entry."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"proxy config: strides_removed must be >= 0 or a list of layers, got {value!r}")
        return value
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"proxy config: strides_removed must be a number or a list like [stem, b4], got {value!r}")
    names = tuple(str(name) for name in value)
    for name in names:
        if name != "stem" and not (name[:1] == "b" and name[1:].isdigit() and int(name[1:]) >= 1):
            raise ValueError(f"proxy config: strides_removed: bad layer {name!r} (write 'stem' or 'bK', K >= 1)")
    if len(set(names)) != len(names):
        raise ValueError(f"proxy config: strides_removed names a layer twice: {list(names)}")
    return names


def unstrided_layers(arch: Architecture, proxy: ProxyConfig, strict: bool = False) -> set[str]:
    """The names ("stem", "bK") of the stride-2 layers of `arch` that the proxy runs at stride 1.

    A name for a layer that has stride 1 already is harmless (the setting is written for a space, whose choices
    never change strides), and so, unless `strict`, is a name for a block that `arch` lacks (the default names
    block 6; a smaller network trains with its stem's stride removed). A search checks its config's own names
    strictly against its space before it starts (`blind_spots`).
    """
    strided = (["stem"] if arch.stem_stride > 1 else []) + \
        [f"b{k}" for k, block in enumerate(arch.blocks, 1) if block.stride > 1]
    if isinstance(proxy.strides_removed, int):
        return set(strided[:proxy.strides_removed])
    for name in proxy.strides_removed:
        if strict and name != "stem" and int(name[1:]) > len(arch.blocks):
            raise ValueError(f"proxy config: strides_removed names {name!r} but the architecture has "
                             f"{len(arch.blocks)} blocks")
    return set(proxy.strides_removed) & set(strided)


def proxy_architecture(arch: Architecture, proxy: ProxyConfig) -> Architecture:
    """The architecture the proxy trains: `arch` adapted to small images and a small budget.

    Three explicit changes, nothing else (kernels, ops, SE, skips and repeats are the child's):

    * the layers named by `proxy.strides_removed` stride 1, so a 28x28 image still has a spatial map on which
      kernel choices matter when it reaches the late blocks (see `ProxyConfig.strides_removed`). A block that
      loses its stride and has equal input and output filters gains its identity residual, exactly as the same
      block string would at stride 1;
    * filters are the deployment model's (its own depth multiplier applied) x `proxy.width`, rounded to
      multiples of `proxy.filter_divisor`, and written into the blocks: the result has depth multiplier 1.0 and
      its block strings say what is trained;
    * the resolution becomes `proxy.image_size`.

    Returns a new Architecture; `arch` is unchanged (frozen). Latency is never taken on the result.
    """
    unstrided = unstrided_layers(arch, proxy)

    def width(filters: int) -> int:
        return round_filters(filters, proxy.width, proxy.filter_divisor)

    blocks = []
    for number, block in enumerate(arch.scaled_blocks(), 1):
        block = block.replace(input_filters=width(block.input_filters), output_filters=width(block.output_filters))
        if f"b{number}" in unstrided:
            blocks.extend(_unstride(block))
        else:
            blocks.append(block)
    return arch.replace(blocks=tuple(blocks), stem_filters=width(arch.scaled_stem()),
                        stem_stride=1 if "stem" in unstrided else arch.stem_stride,
                        resolution=proxy.image_size, depth_multiplier=1.0)


def _unstride(block: Block) -> list[Block]:
    """`block` at stride 1 with the shortcut its first layer has at its own stride.

    At stride 2 an identity skip cannot apply and a pooling skip pools; at stride 1 with equal filters both
    would become an identity residual, so the proxy would see a difference the deployment model lacks
    (identity against none) and miss one it has (pooled against identity). The first layer therefore takes
    `noskip` where the deployment has no shortcut and `poolskip` where it has a pooled one (at stride 1: the
    identity, or the 1x1 projection when the filters change); when that differs from the other repeats' skip, it
    becomes a block of its own.
    """
    cin, cout = block.input_filters, block.output_filters
    unstrided = block.replace(strides=(1, 1))
    deployed = residual_kind(block.skip, block.stride, cin, cin, cout)          # none or pool at a stride > 1
    wanted = residual_kind(SKIP_POOL, 1, cin, cin, cout) if deployed == SKIP_POOL else SKIP_NONE
    if residual_kind(block.skip, 1, cin, cin, cout) == wanted:
        return [unstrided]
    first = unstrided.replace(repeats=1, skip=SKIP_POOL if deployed == SKIP_POOL else SKIP_NONE)
    if block.repeats == 1:
        return [first]
    return [first, unstrided.replace(repeats=block.repeats - 1, input_filters=cout)]


def model_signature(arch: Architecture, input_channels: int = 3) -> tuple:
    """What `arch` computes at its resolution, layer by layer, with aliases folded: two architectures with the
    same signature build the same function class (they differ at most in weights that only ever multiply
    padding). A kernel is folded to the part that can reach the map: a k x k same-padded kernel whose reach
    k // 2 is at least the map's side - 1 sees the whole map from every position, as any larger kernel does.
    """
    rows = []
    for layer in profile(arch, input_channels=input_channels):
        reach = min(layer.kernel // 2, max(layer.in_hw - 1, 0))
        rows.append((layer.op, layer.in_hw, layer.out_hw, layer.in_filters, layer.out_filters, 2 * reach + 1,
                     layer.stride, layer.expand_filters, layer.se_filters, layer.skip))
    return tuple(rows)


def blind_spots(space: SearchSpace, proxy: ProxyConfig, strict: bool = True) -> list[str]:
    """The choices of `space` that change the deployment model but not the proxy model, one sentence each.

    Checked block by block, analytically: two kernel options the proxy's feature map cannot tell apart, and two
    filter options that the proxy's width rounding merges. The test suite checks the same property by changing
    every decision of random children and comparing `model_signature`s; an empty list means the proxy sees
    every decision that the deployment model sees. `strict` refuses a `strides_removed` name for a block the space
    lacks (a search is strict when its config writes the names out; the default's "b6" may not exist in a small
    space).
    """
    base = space.decode([0] * len(space.decisions))
    unstrided = unstrided_layers(base, proxy, strict=strict)
    side = -(-proxy.image_size // (1 if "stem" in unstrided else base.stem_stride))
    found = []
    for number, (block, scaled) in enumerate(zip(space.blocks, base.scaled_blocks()), 1):
        stride = 1 if f"b{number}" in unstrided else scaled.stride
        next_side = -(-side // stride)
        kernels = block.options("kernel")
        folded: dict[int, list[int]] = {}
        for kernel in kernels:
            folded.setdefault(2 * min(kernel // 2, side - 1) + 1, []).append(kernel)
        for merged in folded.values():
            if len(merged) > 1:
                found.append(f"block {number} kernel: {' and '.join(map(str, merged))} act alike on its "
                             f"{side}x{side} proxy map")
        deploy: dict[int, list[float]] = {}
        for multiplier in block.options("filter_multiplier"):
            filters = round_filters(round_filters(block.filters, float(multiplier)), base.depth_multiplier)
            deploy.setdefault(filters, []).append(multiplier)
        proxied: dict[int, list[int]] = {}
        for filters in deploy:
            proxied.setdefault(round_filters(filters, proxy.width, proxy.filter_divisor), []).append(filters)
        for trained, merged in proxied.items():
            if len(merged) > 1:
                found.append(f"block {number} filters: {' and '.join(map(str, merged))} all train as {trained} "
                             f"at proxy width {proxy.width:g}")
        side = next_side
    return found
