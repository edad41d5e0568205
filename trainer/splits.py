"""A dataset's training split, numbered, to draw subsets from by index: what the proxy task reads.

The proxy task (`workers.proxy`) trains each child on one subset of the training split and scores it on another
(the paper: 5 epochs of ImageNet, scored on 50,000 held-out training images). Both subsets are taken here by index,
whatever form the data has, so that a worker decodes the images of its subsets and nothing else, and reads little
else:

* in-memory arrays (`trainer.data`: Fashion-MNIST, CIFAR, any .npz) are indexed in place and batched by
  `trainer.data.make_pipeline`, the fast path that the default proxy has always used;
* an image folder (`trainer.pipelines.folder_layout`) reads the selected files;
* ImageNet TFRecord shards are indexed once per process -- every record's offset and length, from the 12-byte
  record headers, so a truncated or foreign shard is refused before anything trains -- and read either whole,
  dropping the records not selected before anything is decoded (when the selection is at least
  `SEQUENTIAL_SHARE` of the shards it touches: sequential reads, the cheap way on any storage), or record by
  record at their offsets (a small sample, such as a rung's first held-out images).

Files are preprocessed as the trainer does (`trainer.pipelines`: the official Inception-style crop for training, the
centre crop for scoring), with fixed parallelism and tf.data's autotuning off, as `make_pipeline` has it: an early-
stopped child leaves an unfinished iterator, and deleting one waits for autotuning's model thread.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import struct
import threading
from typing import Callable, Iterator

import numpy as np

from mnas.trainer.data import DatasetMissing, get_dataset_spec, load_dataset, make_pipeline, num_classes_of
from mnas.trainer.pipelines import (FILE_DATASETS, _shards, check_data_dir, epoch_seed, eval_preprocess,
                                    folder_layout, imagenet_parser, train_preprocess)

SEQUENTIAL_SHARE = 0.25    # read TFRecord shards whole when the selection is at least this share of their records
SHUFFLE_BUFFER = 10000     # records shuffled at once when shards are read whole (the official pipelines' size)
OPEN_SHARDS = 32           # file handles kept open when reading records one by one
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")   # JPEG, PNG: what the folder reader decodes


# --------------------------------------------------------------------------------------------------------------
# Examples: some of a split's images, ready to train on or to score


class Examples:
    """Some examples of a training split in a fixed order.

    `training_batches(batch_size, image_size, seed, steps, parallel)`: an iterator over `steps` full batches of
    (float32 [-1, 1] NHWC images, int32 labels), epoch after epoch, each epoch's order and augmentation fixed by
    (seed, epoch); `scoring_batches(batch_size, image_size, parallel)`: one pass, the last batch partial;
    `head(n)`: the first n; `known_labels()`: every label if known without reading images, else None;
    `check()`: reads what is cheap to read up front, so a bad file stops a search before its first child.
    """

    count: int
    channels: int

    def head(self, n: int) -> "Examples":
        raise NotImplementedError

    def known_labels(self) -> np.ndarray | None:
        raise NotImplementedError

    def training_batches(self, batch_size: int, image_size: int, seed: int, steps: int,
                         parallel: int = 1) -> Iterator:
        raise NotImplementedError

    def scoring_batches(self, batch_size: int, image_size: int, parallel: int = 1):
        raise NotImplementedError

    def check(self) -> None:
        """Nothing to read up front by default."""


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayExamples(Examples):
    """Examples held in memory: uint8 NHWC images and int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def head(self, n: int) -> "ArrayExamples":
        return ArrayExamples(self.images[:n], self.labels[:n])

    def known_labels(self) -> np.ndarray:
        return self.labels

    def training_batches(self, batch_size, image_size, seed, steps, parallel=1):
        return iter(make_pipeline(self.images, self.labels, batch_size, image_size, shuffle=True, seed=seed,
                                  drop_remainder=True).repeat().take(steps))

    def scoring_batches(self, batch_size, image_size, parallel=1):
        return make_pipeline(self.images, self.labels, batch_size, image_size)


def as_examples(data) -> Examples:
    """`data` as Examples: Examples pass through; an (images, labels) pair of arrays is wrapped."""
    return data if isinstance(data, Examples) else ArrayExamples(*data)


@dataclasses.dataclass(frozen=True, eq=False)
class FileExamples(Examples):
    """Examples read from files on demand: `indices` into the split of `source` (a folder or TFRecord shards)."""

    source: "_FolderSource | _RecordSource"
    indices: np.ndarray
    channels: int = 3     # files decode to RGB

    @property
    def count(self) -> int:
        return len(self.indices)

    def head(self, n: int) -> "FileExamples":
        return FileExamples(self.source, self.indices[:n])

    def known_labels(self) -> np.ndarray | None:
        labels = self.source.labels
        return None if labels is None else labels[self.indices].astype(np.int64)

    def training_batches(self, batch_size, image_size, seed, steps, parallel=1):
        """Each epoch a new order of all the examples (a full permutation, or for shards read whole a new shard
        order and a shuffle buffer), Inception-style crops seeded by (seed, epoch, position)."""
        import tensorflow as tf

        per_epoch = self.count // batch_size
        if per_epoch < 1:
            raise ValueError(f"{self.count} examples make no batch of {batch_size}")

        def epoch(number: int):
            seed_e = epoch_seed(seed, number)
            examples = self.source.examples(self.indices, parallel, shuffle_seed=seed_e)
            first = tf.constant(seed_e, tf.int64)
            pairs = _map(examples.take(per_epoch * batch_size).enumerate(),
                         lambda i, ex: (train_preprocess(ex[0], image_size, tf.stack([first, i])), ex[1]), parallel)
            return _fixed(pairs.batch(batch_size, drop_remainder=True).prefetch(1))

        epochs = -(-steps // per_epoch)
        return itertools.islice(itertools.chain.from_iterable(epoch(n) for n in range(epochs)), steps)

    def scoring_batches(self, batch_size, image_size, parallel=1):
        examples = self.source.examples(self.indices, parallel)
        images = _map(examples, lambda data, label: (eval_preprocess(data, image_size), label), parallel)
        return _fixed(images.batch(batch_size).prefetch(1))

    def check(self) -> None:
        self.source.check(self.indices)


def _map(dataset, function, parallel: int):
    """`dataset.map(function)` on `parallel` threads in a fixed order (one thread: the plain sequential map)."""
    if parallel > 1:
        return dataset.map(function, num_parallel_calls=parallel, deterministic=True)
    return dataset.map(function)


def _fixed(dataset):
    """`dataset` with tf.data's autotuning off: every parallelism and buffer here is fixed."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# --------------------------------------------------------------------------------------------------------------
# The split and its sources


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingSplit:
    """A dataset's training split, examples numbered 0..size-1 in file order.

    `take(selection)` gives the Examples of a slice or an array of numbers; `labels_of(numbers)` their labels
    (read from the records when the labels live inside TFRecords). `streamed` says whether examples are read
    from files on demand (folder, imagenet) or held in memory.
    """

    name: str
    where: str
    num_classes: int
    size: int
    streamed: bool
    source: "_ArraySource | _FolderSource | _RecordSource"

    def take(self, selection) -> Examples:
        return self.source.take(selection)

    def labels_of(self, numbers: np.ndarray) -> np.ndarray:
        return self.source.labels_of(np.asarray(numbers))


@dataclasses.dataclass(frozen=True, eq=False)
class _ArraySource:
    images: np.ndarray
    labels: np.ndarray

    def take(self, selection) -> ArrayExamples:
        return ArrayExamples(self.images[selection], self.labels[selection])   # a slice is a view: no copy

    def labels_of(self, numbers):
        return self.labels[numbers]


@dataclasses.dataclass(frozen=True, eq=False)
class _FolderSource:
    """Image files with their labels (the folder's training split)."""

    where: str
    paths: np.ndarray      # str
    labels: np.ndarray     # int32

    def take(self, selection) -> FileExamples:
        return FileExamples(self, np.arange(len(self.paths))[selection])

    def labels_of(self, numbers):
        return self.labels[numbers].astype(np.int64)

    def examples(self, indices: np.ndarray, parallel: int, shuffle_seed: int | None = None):
        """(file bytes, label) of `indices`, in their order or, with `shuffle_seed`, in a permutation of it."""
        import tensorflow as tf

        order = indices if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(indices)
        pairs = tf.data.Dataset.from_tensor_slices((self.paths[order], self.labels[order]))
        return _map(pairs, lambda path, label: (tf.io.read_file(path), label), parallel)

    def check(self, indices: np.ndarray) -> None:
        """Every selected file starts like a JPEG or a PNG (one 8-byte read each), and the first decodes."""
        import tensorflow as tf

        for path in self.paths[indices]:
            try:
                with open(path, "rb") as handle:
                    head = handle.read(8)
            except OSError as err:
                raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
            if not head.startswith(_MAGIC):
                raise ValueError(f"{path}: not a JPEG or PNG image (it starts with {head[:8]!r}): replace or "
                                 "remove it")
        if len(indices):
            path = self.paths[indices[0]]
            try:
                tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            except tf.errors.OpError as err:
                raise ValueError(f"{path}: cannot decode: {err.message.strip().splitlines()[0]}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class RecordIndex:
    """Where every record of some TFRecord shards is: numbered in file order, shard after shard."""

    files: tuple[str, ...]
    counts: np.ndarray     # records of each shard
    shard_of: np.ndarray   # each record's shard
    offsets: np.ndarray    # byte offset of each record's payload
    lengths: np.ndarray    # payload bytes of each record

    @property
    def size(self) -> int:
        return len(self.offsets)

    @property
    def starts(self) -> np.ndarray:
        """The number of each shard's first record."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


def _scan_shard(path: str) -> tuple[list[int], list[int]]:
    """(payload offsets, payload lengths) of one TFRecord file, from its record headers: each record is a
    little-endian uint64 length, a 4-byte checksum of it, the payload, and a 4-byte checksum of the payload."""
    size = os.path.getsize(path)
    offsets, lengths = [], []
    with open(path, "rb") as handle:
        position = 0
        while position < size:
            handle.seek(position)
            header = handle.read(8)
            if len(header) < 8 or size - position < 16:
                raise ValueError(f"{path}: not a complete TFRecord file: {size - position} stray bytes at byte "
                                 f"{position:,} (truncated, or not a TFRecord file)")
            length = struct.unpack("<Q", header)[0]
            end = position + 16 + length
            if end > size:
                raise ValueError(f"{path}: not a complete TFRecord file: the record at byte {position:,} declares "
                                 f"{length:,} bytes but the file ends at byte {size:,} (truncated, or not a "
                                 "TFRecord file)")
            offsets.append(position + 12)
            lengths.append(length)
            position = end
    return offsets, lengths


_INDEXES: dict[tuple, RecordIndex] = {}
_INDEX_LOCK = threading.Lock()


def index_records(files: list[str]) -> RecordIndex:
    """The RecordIndex of `files`, scanned once per process while the files keep their sizes and times.

    Raises:
        ValueError: naming a shard that is truncated or not a TFRecord file.
    """
    key = tuple((path, os.path.getsize(path), os.stat(path).st_mtime_ns) for path in files)
    with _INDEX_LOCK:
        if key in _INDEXES:
            return _INDEXES[key]
    shard_of, offsets, lengths, counts = [], [], [], []
    for number, path in enumerate(files):
        found, sizes = _scan_shard(path)
        counts.append(len(found))
        shard_of.append(np.full(len(found), number, np.int32))
        offsets += found
        lengths += sizes
    index = RecordIndex(tuple(files), np.asarray(counts, np.int64), np.concatenate(shard_of or [np.zeros(0, np.int32)]),
                        np.asarray(offsets, np.int64), np.asarray(lengths, np.int64))
    with _INDEX_LOCK:
        _INDEXES.clear()                   # one dataset at a time is what a worker reads
        _INDEXES[key] = index
    return index


@dataclasses.dataclass(frozen=True, eq=False)
class _RecordSource:
    """TFRecord shards of tf.train.Example records; `parse` makes (encoded image, label) of a record."""

    where: str
    index: RecordIndex
    parse: Callable
    parse_label: Callable
    labels = None          # inside the records

    def take(self, selection) -> FileExamples:
        return FileExamples(self, np.arange(self.index.size)[selection])

    def labels_of(self, numbers):
        labels = self._one_by_one(numbers, None).map(self.parse_label).batch(4096)
        return np.concatenate([np.zeros(0, np.int64)] + [batch.numpy().astype(np.int64) for batch in labels])

    def examples(self, indices: np.ndarray, parallel: int, shuffle_seed: int | None = None):
        """(encoded image, label) of the records `indices`: shards read whole when the selection is a large part
        of them (in file order, or with `shuffle_seed` in a new shard order through a shuffle buffer), else one
        by one at their offsets (in the order of `indices`, or a permutation of it)."""
        shards = np.unique(self.index.shard_of[indices])
        if len(indices) and len(indices) >= SEQUENTIAL_SHARE * self.index.counts[shards].sum():
            records = self._whole_shards(indices, shards, parallel, shuffle_seed)
        else:
            records = self._one_by_one(indices, shuffle_seed)
        return _map(records, self.parse, parallel)

    def _whole_shards(self, indices, shards, parallel, shuffle_seed):
        import tensorflow as tf

        chosen = np.zeros(self.index.size, bool)
        chosen[indices] = True
        if shuffle_seed is not None:
            shards = np.random.default_rng(shuffle_seed).permutation(shards)
        files, starts, chosen = tf.constant(self.index.files), tf.constant(self.index.starts), tf.constant(chosen)
        block = 256

        def shard_records(number):
            first = tf.gather(starts, number)

            def keep(position, batch):
                begin = first + position * block
                return tf.boolean_mask(batch, chosen[begin:begin + tf.shape(batch, out_type=tf.int64)[0]])

            batches = tf.data.TFRecordDataset(tf.gather(files, number)).batch(block)
            return batches.enumerate().map(keep).unbatch()

        at_once = {"num_parallel_calls": min(parallel, len(shards)), "deterministic": True} if parallel > 1 else {}
        records = tf.data.Dataset.from_tensor_slices(shards.astype(np.int64)).interleave(
            shard_records, cycle_length=min(len(shards), 4), **at_once)
        if shuffle_seed is not None:
            records = records.shuffle(min(len(indices), SHUFFLE_BUFFER), seed=shuffle_seed)
        return records

    def _one_by_one(self, indices, shuffle_seed):
        import tensorflow as tf

        order = indices if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(indices)
        index, files = self.index, self.index.files
        where = list(zip(index.shard_of[order].tolist(), index.offsets[order].tolist(),
                         index.lengths[order].tolist()))

        def read():
            handles: collections.OrderedDict = collections.OrderedDict()
            try:
                for shard, offset, length in where:
                    handle = handles.pop(shard, None) or open(files[shard], "rb")
                    handles[shard] = handle
                    if len(handles) > OPEN_SHARDS:
                        handles.popitem(last=False)[1].close()
                    handle.seek(offset)
                    payload = handle.read(length)
                    if len(payload) != length:
                        raise ValueError(f"{files[shard]}: the record at byte {offset - 12:,} is cut short (the "
                                         "file changed after it was indexed)")
                    yield payload
            finally:
                for handle in handles.values():
                    handle.close()

        return tf.data.Dataset.from_generator(read, output_signature=tf.TensorSpec([], tf.string))

    def check(self, indices: np.ndarray) -> None:
        """The first selected record parses as an ImageNet example and its image decodes."""
        import tensorflow as tf

        if not len(indices):
            return
        try:
            for data, _ in self._one_by_one(indices[:1], None).map(self.parse):
                tf.io.decode_image(data, channels=3, expand_animations=False)
        except tf.errors.OpError as err:
            shard = self.index.files[self.index.shard_of[indices[0]]]
            raise ValueError(f"{shard}: cannot read an ImageNet example (image/encoded, image/class/label): "
                             f"{err.message.strip().splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------------------------
# Opening a split


def open_training_split(name: str, data_dir: str | None = None, num_classes: int | None = None) -> TrainingSplit:
    """The training split of dataset `name` ('imagenet', 'folder', or a key of `trainer.data.DATASETS`).

    Args:
        num_classes: classifier width; None takes the data's (a registered count, an npz's largest label + 1,
            a folder's class folders, 1000 for ImageNet). Every label of the split must be below it.

    Raises:
        DatasetMissing: the folder or its files are absent.
        ValueError: files are malformed (a TFRecord shard is checked whole), or a label does not fit.
    """
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"number of classes must be a positive integer, got {num_classes!r}")
    if name in FILE_DATASETS:
        check_data_dir(name, data_dir, "a data_dir: the folder of its files")
        return (_imagenet_split if name == "imagenet" else _folder_split)(data_dir, num_classes)
    spec = get_dataset_spec(name)                      # ValueError listing every known name
    arrays = load_dataset(name, data_dir)
    classes = num_classes or num_classes_of(name, arrays)
    where = data_dir or spec.default_dir
    labels = arrays.y_train
    if len(labels) and labels.max() >= classes:
        raise ValueError(f"{name} in {where}: training label {int(labels.max())} does not fit {classes} classes "
                         f"(labels must be 0-{classes - 1}): set the number of classes, or fix the labels")
    return TrainingSplit(name, where, classes, len(labels), False, _ArraySource(arrays.x_train, labels))


def _folder_split(data_dir: str, num_classes: int | None) -> TrainingSplit:
    classes, paths, labels, _, _ = folder_layout(data_dir)
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(f"{data_dir}: {len(classes)} class folders, but {num_classes} classes were asked for")
    source = _FolderSource(data_dir, np.asarray(paths, dtype=str), np.asarray(labels, np.int32))
    return TrainingSplit("folder", data_dir, len(classes), len(paths), True, source)


def _imagenet_split(data_dir: str, num_classes: int | None) -> TrainingSplit:
    files = _shards(data_dir, "train")
    if not files:
        raise DatasetMissing(f"{data_dir}: no TFRecord shards train-* (the official ImageNet layout: "
                             "train-00000-of-01024, ...)")
    index = index_records(files)
    if not index.size:
        raise DatasetMissing(f"{data_dir}: the train-* shards hold no records")
    classes = num_classes or 1000
    source = _RecordSource(data_dir, index, imagenet_parser(classes), imagenet_parser(classes, label_only=True))
    return TrainingSplit("imagenet", data_dir, classes, index.size, True, source)

