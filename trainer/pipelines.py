"""What the trainer reads: one `InputData` per dataset, whatever form its files take.

Two families behind one interface:

* in-memory arrays (`trainer.data.DATASETS`: Fashion-MNIST IDX, CIFAR-style pickles or .npz, any arrays file):
  batched through `trainer.data.make_pipeline`, at their native size unless asked otherwise, scaled to [-1, 1];
* files streamed from disk, too big for memory: ImageNet TFRecords in the official format (`image/encoded`
  JPEG bytes, `image/class/label`), and an image-folder tree (one subfolder of JPEG/PNG files per class). Training
  uses the Inception-style crop of the official MnasNet input pipeline (tensorflow/tpu,
  models/official/mnasnet/preprocessing.py: a random box covering 8-100% of the image with aspect ratio 3/4-4/3,
  at least 10% of the object, centre crop if 10 attempts fail, then a bicubic resize and a random left-right
  flip); evaluation takes the centre crop of side image_size / (image_size + 32) of the shorter edge and resizes
  it. One departure: pixels go to [-1, 1] as in the rest of the project, not mean/std normalised -- every model
  starts with batch norm after its stem, so only the scale's order of magnitude matters, and the exported TFLite
  models then take the same input whatever dataset trained them.

Every random choice (shuffle order, crop, flip) is a stateless function of (seed, epoch, position), so an epoch
replays identically after `--resume`: a resumed run sees exactly the batches the crashed run would have seen.

Workers of a multi-worker replay (trainer.distributed) read files by share: `train(..., workers=N, worker=K)`
numbers the epoch's shuffled stream of light items (a file's path, a TFRecord's serialized record) exactly as one
process does, keeps worker K's contiguous slice of every global batch, and only then reads the image files, parses
the records and decodes: each worker decodes its own images only, and of an image folder reads only its own files
(TFRecord shards are still read through by every worker, their records dropped unparsed). Its batches, of the
per-worker size, are the slices that tf.distribute's DATA auto-sharding would have given it, same images, same
augmentation.

`open_input` is what `train` reads (a training and an evaluation split); the proxy task draws subsets of the
training split by index through `trainer.splits`, which reuses this module's layouts and preprocessing.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Callable

import numpy as np

from mnas.trainer.data import DatasetMissing, get_dataset_spec, load_dataset, make_pipeline, num_classes_of

IMAGENET_TRAIN_IMAGES = 1281167  # the official sharding's sizes, so the full set need not be scanned to count it
IMAGENET_EVAL_IMAGES = 50000
CROP_PADDING = 32  # official centre crop: image_size / (image_size + 32) of the shorter side
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FILE_DATASETS = ("imagenet", "folder")


@dataclasses.dataclass(frozen=True)
class InputData:
    """A dataset ready to train on: batches of (float32 [-1, 1] NHWC images, int32 labels).

    `train(batch_size, seed, epoch)` gives one epoch of full batches in an order fixed by (seed, epoch); where
    `by_worker`, `train(batch_size, seed, epoch, workers, worker)` gives worker `worker`'s slices of those batches
    (batch_size // workers images each), read and decoded by it alone;
    `evaluate(batch_size)` gives the whole evaluation set in file order (last batch partial);
    `samples(n, seed)` gives n training images with evaluation preprocessing (no augmentation), as numpy: the
    representative data of post-training quantization.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    num_train: int
    num_eval: int
    train: Callable
    evaluate: Callable
    samples: Callable
    by_worker: bool = False

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.num_train // batch_size


def epoch_seed(seed: int, epoch: int) -> int:
    """One integer per (run seed, epoch): shuffles and augmentations of an epoch depend on nothing else."""
    return (seed * 1_000_003 + epoch) % (2 ** 31 - 1)


def check_data_dir(name: str, data_dir: str | None, how: str) -> None:
    """A file dataset's folder must be given (`how`: the flag or setting that gives it) and exist."""
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs {how}")
    if not os.path.isdir(data_dir):
        raise DatasetMissing(f"data folder {data_dir} does not exist")


def open_input(name: str, data_dir: str | None = None, image_size: int | None = None, fit: str = "resize",
               num_classes: int | None = None, train_limit: int | None = None,
               eval_limit: int | None = None) -> InputData:
    """The dataset `name` ('imagenet', 'folder', or a key of `trainer.data.DATASETS`) as an InputData.

    Args:
        image_size: side of the square images the model sees; None keeps an array dataset's native size (28 for
            Fashion-MNIST, 32 for CIFAR) and is required for file datasets.
        fit: for array datasets, 'resize' or 'pad' to reach image_size (see `make_pipeline`).
        num_classes: classifier width for ImageNet (default 1000); array and folder datasets know their own.
            The `npz` dataset takes its largest label + 1.
        train_limit, eval_limit: use only the first N images of each split (smoke runs, benchmarks).

    Raises:
        DatasetMissing: the folder or the expected files are absent.
        ValueError: files are malformed (the first record of each split is decoded here, so a wrong format
            fails before any training output is written), or an option is out of range.
    """
    for label, value in (("image size", image_size), ("train limit", train_limit), ("eval limit", eval_limit),
                         ("number of classes", num_classes)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if name in FILE_DATASETS:
        check_data_dir(name, data_dir, "--data-dir")
        if image_size is None:
            raise ValueError(f"dataset {name!r} needs an image size")
        opener = _imagenet_input if name == "imagenet" else _folder_input
        return opener(data_dir, image_size, num_classes, train_limit, eval_limit)
    get_dataset_spec(name)  # ValueError listing every known name
    arrays = load_dataset(name, data_dir)
    if not len(arrays.y_test):
        raise ValueError(f"{name} in {data_dir}: no test images (x_test, y_test), which `train` evaluates on; "
                         "add them to the file (the proxy task reads only x_train, y_train)")
    return _array_input(name, arrays, num_classes_of(name, arrays), image_size, fit, train_limit, eval_limit)


# --------------------------------------------------------------------------------------------------------------
# In-memory arrays

def _array_input(name, arrays, num_classes, image_size, fit, train_limit, eval_limit) -> InputData:
    x_train, y_train = arrays.x_train[:train_limit], arrays.y_train[:train_limit]
    x_eval, y_eval = arrays.x_test[:eval_limit], arrays.y_test[:eval_limit]
    for split, y in (("training", y_train), ("test", y_eval)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name}: {split} label {int(y.max())} out of range for {num_classes} classes")
    size = image_size or x_train.shape[1]
    flip = name.startswith("cifar")  # the usual CIFAR augmentation; Fashion-MNIST trains as the proxy does, plain

    def train(batch_size: int, seed: int, epoch: int):
        import tensorflow as tf

        es = epoch_seed(seed, epoch)
        batches = make_pipeline(x_train, y_train, batch_size, size, fit, shuffle=True, seed=es, drop_remainder=True)
        if not flip:
            return batches

        def mirror(i, batch):
            x, y = batch
            coin = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seed=tf.stack([tf.cast(es, tf.int64), i]))
            return tf.where(coin < 0.5, tf.reverse(x, axis=[2]), x), y

        return batches.enumerate().map(mirror, num_parallel_calls=1, deterministic=True)

    def evaluate(batch_size: int):
        return make_pipeline(x_eval, y_eval, batch_size, size, fit)

    def samples(n: int, seed: int = 0) -> np.ndarray:
        pick = np.sort(np.random.default_rng(seed).choice(len(x_train), min(n, len(x_train)), replace=False))
        return np.concatenate([x.numpy() for x, _ in make_pipeline(x_train[pick], y_train[pick], 256, size, fit)])

    return InputData(name, num_classes, (size, size, x_train.shape[-1]), len(x_train), len(x_eval),
                     train, evaluate, samples)


# --------------------------------------------------------------------------------------------------------------
# Files: preprocessing shared by ImageNet TFRecords and image folders

def _to_unit_range(image):
    import tensorflow as tf

    return tf.clip_by_value(image, 0.0, 255.0) * (2.0 / 255.0) - 1.0


def _decode(image_bytes):
    import tensorflow as tf

    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def train_preprocess(image_bytes, size: int, seed):
    """Inception-style crop + flip of one encoded image (official MnasNet preprocessing, stateless seeds)."""
    import tensorflow as tf

    image = _decode(image_bytes)
    shape = tf.shape(image)
    whole = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, whole, seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    # The sampler returns the whole image when every attempt failed; the official pipeline then centre-crops.
    failed = tf.reduce_all(tf.equal(crop[:2], shape[:2]))
    image = tf.cond(failed, lambda: _centre_crop(image, size),
                    lambda: tf.image.resize(tf.slice(image, begin, crop), [size, size], method="bicubic"))
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + tf.constant([0, 1], seed.dtype))
    return _to_unit_range(image)


def _centre_crop(image, size: int):
    import tensorflow as tf

    shape = tf.shape(image)
    side = tf.cast(size / (size + CROP_PADDING) * tf.cast(tf.minimum(shape[0], shape[1]), tf.float64), tf.int32)
    side = tf.maximum(side, 1)
    top, left = (shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2
    cropped = tf.image.crop_to_bounding_box(image, top, left, side, side)
    return tf.image.resize(cropped, [size, size], method="bicubic")


def eval_preprocess(image_bytes, size: int):
    """Centre crop of one encoded image (official MnasNet evaluation preprocessing), in [-1, 1]."""
    return _to_unit_range(_centre_crop(_decode(image_bytes), size))


def _file_input(name, items, load, train_sources, eval_sources, num_train, num_eval, num_classes, size,
                train_limit, eval_limit, where) -> InputData:
    """An InputData over `items(sources)` -> a dataset of light items (a file's path and label, a serialized
    record), cheap to shuffle, number and share out, and `load(item)` -> (encoded image, label): the reading and
    parsing that come after a worker's share is taken."""
    import tensorflow as tf

    auto = tf.data.AUTOTUNE

    def train_items():
        stream = items(train_sources)
        return stream.take(train_limit) if train_limit else stream

    def train(batch_size: int, seed: int, epoch: int, workers: int = 1, worker: int = 0):
        es = tf.constant(epoch_seed(seed, epoch), tf.int64)
        numbered = train_items().shuffle(min(num_train, 10000), seed=int(es),
                                         reshuffle_each_iteration=False).enumerate()
        local = batch_size
        if workers > 1:
            numbered, local = share(numbered, batch_size, workers, worker)

        def prepare(i, item):
            image, label = load(item)
            return train_preprocess(image, size, tf.stack([es, i])), label

        pairs = numbered.map(prepare, num_parallel_calls=auto, deterministic=True)
        return pairs.batch(local, drop_remainder=True).prefetch(auto)

    def share(numbered, batch_size: int, workers: int, worker: int):
        """Worker `worker`'s slice of each of the epoch's full global batches, and the slice's size: positions
        i with (i mod batch_size) // (batch_size // workers) == worker, kept before anything is read."""
        if batch_size % workers:
            raise ValueError(f"--batch-size {batch_size} (the global batch) does not split evenly over {workers} "
                             f"workers: use a multiple of {workers}")
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} is not one of {workers} workers")
        local = batch_size // workers
        whole = numbered.take(num_train // batch_size * batch_size)  # the partial last global batch is dropped
        return whole.filter(lambda i, item: tf.equal(i % batch_size // local, worker)), local

    def evaluate(batch_size: int):
        stream = items(eval_sources)
        stream = stream.take(eval_limit) if eval_limit else stream

        def prepare(item):
            image, label = load(item)
            return eval_preprocess(image, size), label

        return stream.map(prepare, num_parallel_calls=auto, deterministic=True).batch(batch_size).prefetch(auto)

    def samples(n: int, seed: int = 0) -> np.ndarray:
        chosen = train_items().shuffle(min(num_train, 10000), seed=seed).take(n)
        images = chosen.map(lambda item: eval_preprocess(load(item)[0], size), num_parallel_calls=auto)
        return np.concatenate([x.numpy() for x in images.batch(256)])

    if train_limit:
        num_train = min(num_train, train_limit)
    if eval_limit:
        num_eval = min(num_eval, eval_limit)
    data = InputData(name, num_classes, (size, size, 3), num_train, num_eval, train, evaluate, samples,
                     by_worker=True)
    try:  # decode one example of each split now: a wrong format fails before anything is written
        next(iter(data.evaluate(1)))
        next(iter(data.train(1, 0, 0)))
    except (tf.errors.OpError, StopIteration) as err:
        message = getattr(err, "message", "") or "no examples"
        raise ValueError(f"{where}: cannot read {name} examples: {message.strip().splitlines()[0]}") from None
    return data


# --------------------------------------------------------------------------------------------------------------
# ImageNet TFRecords

def _shards(data_dir: str, prefix: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(data_dir, f"{prefix}-*")) if os.path.isfile(p))


def _count(files: list[str], full_size: int, full_shards: int) -> int:
    """Images in TFRecord shards: the official total for the complete official sharding, else counted."""
    import tensorflow as tf

    match = re.search(r"-of-(\d+)$", files[0])
    if match and int(match.group(1)) == full_shards == len(files):
        return full_size
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def imagenet_parser(classes: int, label_only: bool = False) -> Callable:
    """A serialized tf.train.Example of the official ImageNet schema -> (encoded image, int32 label in
    0..classes-1); the label is checked, so a record outside the range stops the pipeline with an error naming
    the range. `label_only`: the label alone, unchecked (read without the image bytes being copied out)."""
    import tensorflow as tf

    label_feature = {"image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    features = {"image/encoded": tf.io.FixedLenFeature([], tf.string), **label_feature}
    if label_only:
        return lambda record: tf.cast(tf.io.parse_single_example(record, label_feature)["image/class/label"],
                                      tf.int32) - 1

    def parse(record):
        parsed = tf.io.parse_single_example(record, features)
        label = tf.cast(parsed["image/class/label"], tf.int32) - 1
        checks = [tf.debugging.assert_non_negative(label, message="image/class/label must be >= 1"),
                  tf.debugging.assert_less(label, classes,
                                           message=f"image/class/label above {classes} (the number of classes)")]
        with tf.control_dependencies(checks):
            return parsed["image/encoded"], tf.identity(label)

    return parse


def _imagenet_input(data_dir, size, num_classes, train_limit, eval_limit) -> InputData:
    """ImageNet as the official trainer reads it: shards train-*-of-01024 and validation-*-of-00128 of
    tf.train.Example records with `image/encoded` (JPEG bytes) and `image/class/label` (int64, 1..1000: the
    official converter keeps 0 for 'background', so 1 is subtracted, as the official input pipeline does)."""
    import tensorflow as tf

    train_files, eval_files = _shards(data_dir, "train"), _shards(data_dir, "validation")
    if not train_files or not eval_files:
        raise DatasetMissing(f"{data_dir}: expected TFRecord shards train-* and validation-* "
                             f"(found {len(train_files)} and {len(eval_files)})")
    classes = num_classes or 1000
    parse = imagenet_parser(classes)

    def records(files):  # serialized records, parsed by `parse` once shared out
        shards = tf.data.Dataset.from_tensor_slices(files)
        return shards.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    try:
        num_train = _count(train_files, IMAGENET_TRAIN_IMAGES, 1024)
        num_eval = _count(eval_files, IMAGENET_EVAL_IMAGES, 128)
    except tf.errors.OpError as err:
        raise ValueError(f"{data_dir}: not TFRecord files: {err.message.strip().splitlines()[0]}") from None
    return _file_input("imagenet", records, parse, train_files, eval_files, num_train, num_eval, classes, size,
                       train_limit, eval_limit, data_dir)


# --------------------------------------------------------------------------------------------------------------
# Image folders

def _list_classes(root: str, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    """Image files of `root`/<class>/ in sorted order; without `classes`, every subfolder is a class and must
    hold at least one image (an empty class would train a classifier output that never sees an example)."""
    names = classes or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for index, name in enumerate(names):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue  # an evaluation split may lack a class
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files and classes is None:
            raise ValueError(f"{folder}: class folder has no {'/'.join(IMAGE_EXTENSIONS)} images: add some, "
                             "or remove the folder")
        paths += [os.path.join(folder, f) for f in files]
        labels += [index] * len(files)
    return names, paths, labels


_LAYOUTS: dict[tuple, tuple] = {}


def folder_layout(data_dir: str) -> tuple[list[str], list[str], list[int], list[str], list[int]]:
    """(classes, training paths, training labels, evaluation paths, evaluation labels) of an image folder.

    A tree DIR/train/<class>/*.{jpg,png} with DIR/val (or validation, test) alike; classes are the training
    subfolders in sorted order. Without a train/ subfolder, DIR's own subfolders are the classes and every 10th
    image of each (in sorted order) is held out for evaluation. Listed once per process while no folder of the
    tree changes (a proxy worker opens the same folder for every child).

    Raises:
        DatasetMissing: no images, or a train/ folder without its evaluation folder.
        ValueError: a class folder without images.
    """
    train_root = os.path.join(data_dir, "train")
    split = os.path.isdir(train_root)
    roots = [train_root] + [os.path.join(data_dir, d) for d in ("val", "validation", "test")] if split else [data_dir]
    key = tuple((root, sub, os.stat(os.path.join(root, sub)).st_mtime_ns)
                for root in roots if os.path.isdir(root) for sub in ("", *sorted(os.listdir(root)))
                if os.path.isdir(os.path.join(root, sub)))
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    if split:
        eval_root = next((os.path.join(data_dir, d) for d in ("val", "validation", "test")
                          if os.path.isdir(os.path.join(data_dir, d))), None)
        if eval_root is None:
            raise DatasetMissing(f"{data_dir}: has train/ but no val/, validation/ or test/ folder")
        classes, train_paths, train_labels = _list_classes(train_root)
        _, eval_paths, eval_labels = _list_classes(eval_root, classes)
    else:
        classes, paths, labels = _list_classes(data_dir)
        held = [i % 10 == 9 for i in range(len(paths))]
        train_paths = [p for p, h in zip(paths, held) if not h]
        train_labels = [l for l, h in zip(labels, held) if not h]
        eval_paths = [p for p, h in zip(paths, held) if h]
        eval_labels = [l for l, h in zip(labels, held) if h]
    if not train_paths or not eval_paths:
        raise DatasetMissing(f"{data_dir}: no {'/'.join(IMAGE_EXTENSIONS)} images in class subfolders "
                             f"({len(train_paths)} for training, {len(eval_paths)} for evaluation)")
    _LAYOUTS.clear()                      # one folder at a time is what a worker reads
    _LAYOUTS[key] = layout = (classes, train_paths, train_labels, eval_paths, eval_labels)
    return layout


def _folder_input(data_dir, size, num_classes, train_limit, eval_limit) -> InputData:
    """An image folder (`folder_layout`) read file by file."""
    import tensorflow as tf

    classes, train_paths, train_labels, eval_paths, eval_labels = folder_layout(data_dir)
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(f"{data_dir}: {len(classes)} class folders, but {num_classes} classes were asked for")

    def files(split):  # paths and labels, the files read by `read` once shared out
        paths, labels = split
        return tf.data.Dataset.from_tensor_slices({"path": paths, "label": np.asarray(labels, np.int32)})

    def read(item):
        return tf.io.read_file(item["path"]), item["label"]

    return _file_input("folder", files, read, (train_paths, train_labels), (eval_paths, eval_labels),
                       len(train_paths), len(eval_paths), len(classes), size, train_limit, eval_limit, data_dir)
