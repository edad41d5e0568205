"""Datasets for the proxy task: loaders into numpy arrays, a registry by name, and a `tf.data` pipeline.

The embedded default is Fashion-MNIST from Debian's `dataset-fashion-mnist` package: the four IDX files of
Zalando's release, gzipped, under /usr/share/datasets/fashion-mnist. It needs no network, which is why the
search's default proxy task uses it (the paper's proxy is 5 epochs of ImageNet; see `search/proxy.py`).

A dataset is a `DatasetSpec` in `DATASETS`: a loader returning an `ArrayDataset`, its number of classes (or
None: the labels say), and where its files live by default: Fashion-MNIST, CIFAR-style arrays (python pickles or
.npz) and any arrays file (`npz`). Datasets too big for memory -- ImageNet TFRecords and image-folder trees --
stream from their files instead; `trainer.pipelines` puts both families behind one interface, for the trainer
(`open_input`) and for the proxy task (`open_training_split`).

TensorFlow is imported inside `make_pipeline` only, so that the loaders (and their tests) stay light.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import os
import pickle
import threading
from typing import Callable, NamedTuple

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_INSTALL_HINT = ("install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data-dir / set the "
                 "proxy config's data_dir to a folder holding the four IDX files "
                 f"({', '.join(f + '.gz' for f in FASHION_MNIST_FILES.values())})")

# IDX type codes (third magic byte) -> numpy dtype; multi-byte types are big-endian in the format.
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class ArrayDataset(NamedTuple):
    """A dataset held in memory. Images are uint8 NHWC; labels are int64 class indices.

    The test split is returned so that a user can evaluate a *final* model on it; the proxy task never
    touches it (it holds out part of the training split instead, as the paper does).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class DatasetMissing(FileNotFoundError):
    """The dataset's files are not on this machine; the message says how to get them."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: how to load a dataset and what a model needs to know about it."""

    load: Callable[[str], ArrayDataset]  # data_dir -> arrays
    num_classes: int | None              # None: the largest label + 1 (`num_classes_of`)
    default_dir: str | None              # None: the dataset has no default place (--data-dir is required)


def read_idx(path: str, expected_ndim: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzipped if its name ends in .gz) into a numpy array.

    The IDX header is two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
    dimension. Everything is checked, because a half-downloaded file otherwise turns into a silently short
    or garbled training set.

    Raises:
        ValueError: naming the file, for a bad magic number, a wrong number of dimensions, a truncated or
            over-long payload, or a corrupt gzip stream.
    """
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot decompress/read IDX file ({err}); the file is truncated or corrupt")
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    zero0, zero1, type_code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file: bad magic number 0x{raw[:4].hex()} "
                         "(expected 0x0000 then a type code such as 0x08 for uint8)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX file: header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        problem = "truncated" if payload < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX file {problem}: shape {shape} needs {expected} data bytes, found {payload}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes `array` as an IDX file (gzipped if `path` ends in .gz): small stand-in datasets for tests."""
    codes = {dtype: code for code, dtype in _IDX_TYPES.items()}
    big_endian = np.asarray(array).astype(np.asarray(array).dtype.newbyteorder(">"))
    code = codes.get(big_endian.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype} (known: {', '.join(map(str, _IDX_TYPES.values()))})")
    header = bytes([0, 0, code, big_endian.ndim]) + np.asarray(big_endian.shape, dtype=">u4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + big_endian.tobytes())


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DatasetMissing(f"Fashion-MNIST file {stem}.gz not found in {data_dir}: {_INSTALL_HINT}")


_CACHE: dict[tuple, ArrayDataset] = {}
_CACHE_LOCK = threading.Lock()


def load_fashion_mnist(data_dir: str = FASHION_MNIST_DIR) -> ArrayDataset:
    """Fashion-MNIST as arrays: x uint8 [N, 28, 28, 1], y int64 [N]; 60,000 training and 10,000 test images.

    Decoded arrays are cached per process and per folder: a Ray actor trains many children one after another,
    and decoding the 26 MB of gzip each time would cost about a second per child. The cached arrays are
    read-only so that no caller can corrupt another's data.

    Raises:
        DatasetMissing: the folder or a file is absent (the message says how to install the package).
        ValueError: a file is not a valid IDX file, or images and labels disagree in number.
    """
    key = ("fashion-mnist", os.path.realpath(data_dir))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    if not os.path.isdir(data_dir):
        raise DatasetMissing(f"Fashion-MNIST folder {data_dir} does not exist: {_INSTALL_HINT}")
    arrays = {}
    for field, stem in FASHION_MNIST_FILES.items():
        path = _find(data_dir, stem)
        array = read_idx(path, expected_ndim=3 if field.startswith("x") else 1)
        if array.dtype != np.uint8:
            raise ValueError(f"{path}: IDX type is {array.dtype}, expected uint8")
        if field.startswith("x"):
            array = array[..., np.newaxis]
        else:
            array = array.astype(np.int64)
            if array.size and array.max() >= 10:
                raise ValueError(f"{path}: label {int(array.max())} out of range for 10 classes")
        array.setflags(write=False)
        arrays[field] = (path, array)
    for split in ("train", "test"):
        (x_path, x), (y_path, y) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise ValueError(f"{x_path} has {len(x)} images but {y_path} has {len(y)} labels")
    dataset = ArrayDataset(**{field: array for field, (_, array) in arrays.items()})
    with _CACHE_LOCK:
        _CACHE[key] = dataset
    return dataset


def clear_cache() -> None:
    """Forgets decoded datasets (tests use it; a worker never needs to)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------------------------------
# CIFAR-style arrays

CIFAR_DIR = "data/cifar"
_CIFAR_PICKLES = {  # the two official python releases: (training files, test files)
    "cifar-10": (tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
    "cifar-100": (("train",), ("test",)),
}
# What a CIFAR pickle may reference: numpy's array reconstruction and nothing else. pickle runs code named in the
# file, so an unrestricted load of a downloaded file would execute whatever it asks for.
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
                   ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def _read_cifar_pickle(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the python release: a dict with b'data' [N, 3072] (R, G, B planes of 32x32) and b'labels'
    (CIFAR-10) or b'fine_labels' (CIFAR-100). Returns uint8 NHWC images and int64 labels."""
    try:
        with open(path, "rb") as handle:
            batch = _ArraysOnly(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise ValueError(f"{path}: not a CIFAR python batch ({err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR python batch (holds a {type(batch).__name__}, not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    labels = batch.get("labels", batch.get("fine_labels"))
    data = batch.get("data")
    if data is None or labels is None:
        raise ValueError(f"{path}: CIFAR batch lacks 'data' or 'labels'/'fine_labels' (has {sorted(batch)})")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: CIFAR 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar_npz(path: str) -> ArrayDataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ArrayDataset._fields if key in archive}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read .npz ({err})") from None
    missing = [key for key in ArrayDataset._fields if key not in arrays]
    if missing:
        raise ValueError(f"{path}: .npz lacks {', '.join(missing)} (needs x_train, y_train, x_test, y_test)")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(f"{path}: x_{split} must be uint8 [N, H, W, C], got {x.dtype} {x.shape}")
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        arrays[f"y_{split}"] = y.astype(np.int64)
    return ArrayDataset(**arrays)


def load_cifar(data_dir: str = CIFAR_DIR) -> ArrayDataset:
    """CIFAR-style arrays from `data_dir`: the official python pickles or one .npz file.

    Looked for, in order: the CIFAR-10 batches (data_batch_1..5 and test_batch; also inside a
    cifar-10-batches-py/ subfolder as the tarball unpacks), the CIFAR-100 files (train, test; or cifar-100-python/),
    then a single *.npz holding x_train, y_train, x_test, y_test (uint8 NHWC images, any size and channels).
    Pickles are read with an unpickler that accepts numpy arrays only.

    Raises:
        DatasetMissing: none of those layouts is present.
        ValueError: a file is present but malformed (named in the message).
    """
    if not os.path.isdir(data_dir):
        raise DatasetMissing(f"CIFAR folder {data_dir} does not exist: pass --data-dir with the python batches "
                             "(data_batch_1..5, test_batch) or an .npz of x_train, y_train, x_test, y_test")
    for sub in ("", "cifar-10-batches-py", "cifar-100-python"):
        folder = os.path.join(data_dir, sub)
        for train_names, test_names in _CIFAR_PICKLES.values():
            present = [n for n in train_names + test_names if os.path.isfile(os.path.join(folder, n))]
            if not present:
                continue
            if any(n in present for n in test_names) and any(n in present for n in train_names):
                parts = {split: [_read_cifar_pickle(os.path.join(folder, n)) for n in names if n in present]
                         for split, names in (("train", train_names), ("test", test_names))}
                return ArrayDataset(*(np.concatenate([p[i] for p in parts[split]])
                                      for split in ("train", "test") for i in (0, 1)))
            raise DatasetMissing(f"{folder}: CIFAR batches incomplete, found only {', '.join(present)} "
                                 f"(need {', '.join(train_names)} and {', '.join(test_names)})")
    archives = sorted(glob.glob(os.path.join(data_dir, "*.npz")))
    if len(archives) == 1:
        return _read_cifar_npz(archives[0])
    if archives:
        raise ValueError(f"{data_dir}: {len(archives)} .npz files, expected one ({', '.join(archives)})")
    raise DatasetMissing(f"no CIFAR data in {data_dir}: expected data_batch_1..5 + test_batch (CIFAR-10), "
                         "train + test (CIFAR-100) or one .npz of x_train, y_train, x_test, y_test")


# --------------------------------------------------------------------------------------------------------------
# Any arrays file

def load_npz(path: str) -> ArrayDataset:
    """Arrays from one .npz: `path` is the file, or a folder holding exactly one.

    The file holds x_train and y_train, and optionally x_test and y_test (both or neither): images uint8
    [N, H, W, C] or [N, H, W] (one channel), labels integer class indices [N] or [N, 1] (0, 1, ...). Without a
    test split the test arrays are empty: the proxy task never reads them; `train` needs them to evaluate.

    Raises:
        DatasetMissing: no such file or folder, or a folder without a .npz.
        ValueError: the file is not an .npz, lacks an array, or holds arrays of the wrong type or shape.
    """
    if os.path.isdir(path):
        archives = sorted(glob.glob(os.path.join(path, "*.npz")))
        if not archives:
            raise DatasetMissing(f"no .npz file in {path}: the npz dataset reads one file of x_train, y_train "
                                 "(and optionally x_test, y_test); set data_dir to the file or its folder")
        if len(archives) > 1:
            raise ValueError(f"{path}: {len(archives)} .npz files, expected one (set data_dir to the file itself)")
        path = archives[0]
    elif not os.path.isfile(path):
        raise DatasetMissing(f"npz file {path} does not exist: set data_dir to an .npz of x_train, y_train "
                             "(optionally x_test, y_test), or to its folder")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ArrayDataset._fields if key in archive}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: cannot read .npz ({err})") from None
    missing = [key for key in ("x_train", "y_train") if key not in arrays]
    if missing:
        raise ValueError(f"{path}: .npz lacks {', '.join(missing)} (needs x_train and y_train; x_test and y_test "
                         "are optional)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: .npz has {'x_test' if 'x_test' in arrays else 'y_test'} without "
                         f"{'y_test' if 'x_test' in arrays else 'x_test'} (give both or neither)")
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            x = arrays["x_train"]
            arrays["x_test"], arrays["y_test"] = x[:0], np.zeros(0, np.int64)
            continue
        x, y = arrays[f"x_{split}"], np.asarray(arrays[f"y_{split}"])
        if x.ndim == 3:
            x = x[..., np.newaxis]
        if x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(f"{path}: x_{split} must be uint8 [N, H, W, C] or [N, H, W], got {x.dtype} {x.shape}")
        if not np.issubdtype(y.dtype, np.integer) or not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise ValueError(f"{path}: y_{split} must hold integer class indices [N], got {y.dtype} {y.shape}")
        y = y.reshape(-1).astype(np.int64)
        if len(y) != len(x):
            raise ValueError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if len(y) and y.min() < 0:
            raise ValueError(f"{path}: y_{split} holds the negative label {int(y.min())} (classes are 0, 1, ...)")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise ValueError(f"{path}: x_test images are {arrays['x_test'].shape[1:]} but x_train images are "
                         f"{arrays['x_train'].shape[1:]}")
    return ArrayDataset(**{key: arrays[key] for key in ArrayDataset._fields})


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(load=load_fashion_mnist, num_classes=10, default_dir=FASHION_MNIST_DIR),
    "cifar": DatasetSpec(load=load_cifar, num_classes=10, default_dir=CIFAR_DIR),
    "cifar100": DatasetSpec(load=load_cifar, num_classes=100, default_dir=CIFAR_DIR),
    "npz": DatasetSpec(load=load_npz, num_classes=None, default_dir=None),
}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = sorted([*DATASETS, "folder", "imagenet"])   # the file datasets of trainer.pipelines
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(known)})") from None


def _signature(path: str) -> tuple:
    """What changes when the files under `path` change: the path and each file's size and modification time."""
    if os.path.isfile(path):
        paths = [path]
    else:
        paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names)
    stats = []
    for item in paths:
        try:
            info = os.stat(item)
        except OSError:
            continue
        stats.append((item, info.st_size, info.st_mtime_ns))
    return tuple(stats)


def load_dataset(name: str, data_dir: str | None = None) -> ArrayDataset:
    """Loads a registered dataset by name; `data_dir=None` means the dataset's default folder.

    Arrays are cached per process and per set of files (a Ray actor trains many children one after another;
    a changed file is read again), read-only so that no caller can corrupt another's data. Fashion-MNIST keeps
    its own cache (`load_fashion_mnist`).
    """
    spec = get_dataset_spec(name)
    if data_dir is None and spec.default_dir is None:
        raise ValueError(f"dataset {name!r} needs a data_dir (--data-dir): the file or folder to read")
    where = data_dir or spec.default_dir
    if spec.load is load_fashion_mnist or not os.path.exists(where):
        return spec.load(where)
    key = (name, os.path.realpath(where), _signature(where))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    dataset = spec.load(where)
    for array in dataset:
        array.setflags(write=False)
    with _CACHE_LOCK:
        for old in [k for k in _CACHE if k[:2] == key[:2]]:
            del _CACHE[old]                    # an older version of the same files
        _CACHE[key] = dataset
    return dataset


def num_classes_of(name: str, arrays: ArrayDataset) -> int:
    """The classifier width of an array dataset: its registered count, or the largest label + 1 (npz)."""
    spec = get_dataset_spec(name)
    if spec.num_classes is not None:
        return spec.num_classes
    top = max([int(y.max()) for y in (arrays.y_train, arrays.y_test) if len(y)], default=0)
    return top + 1


def make_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, image_size: int | None = None,
                  fit: str = "resize", shuffle: bool = False, seed: int = 0, drop_remainder: bool = False):
    """A `tf.data` pipeline of (float images, int labels) batches from uint8 arrays.

    Batching comes before the per-image work so that normalisation and resizing run once per batch, vectorised
    (the per-element map of the usual recipe costs more than the training step of a small proxy model).

    Args:
        images: uint8 [N, H, W, C].
        labels: integer class indices [N].
        batch_size: images per batch.
        image_size: output height = width; None keeps the native size.
        fit: how to reach `image_size`: 'resize' (bilinear) or 'pad' (centred zero padding, or a centred crop
            when smaller) -- padding keeps the pixels exactly, resizing keeps the object's share of the frame.
        shuffle: shuffle the whole array every epoch (a full-size buffer: cheap for uint8 images in memory).
        seed: shuffle seed; the same seed gives the same order of batches.
        drop_remainder: drop a last partial batch (keeps one traced shape in training).

    Images are scaled to [-1, 1]: every child starts with batch norm after its stem, so only the scale's
    order of magnitude matters.
    """
    import tensorflow as tf

    if fit not in ("resize", "pad"):
        raise ValueError(f"unknown fit {fit!r} (known: resize, pad)")
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    native = images.shape[1]

    def prepare(x, y):
        x = tf.cast(x, tf.float32) * (2.0 / 255.0) - 1.0
        if image_size is not None and image_size != native:
            if fit == "resize":
                x = tf.image.resize(x, (image_size, image_size), method="bilinear")
            else:
                # Pad with -1 (black in [-1, 1]) by padding the [0, 2] shifted image with zeros.
                x = tf.image.resize_with_crop_or_pad(x + 1.0, image_size, image_size) - 1.0
        return x, tf.cast(y, tf.int32)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(prepare, num_parallel_calls=1, deterministic=True).prefetch(2)
    # Every parallelism and buffer size here is fixed, so autotuning has nothing to tune; its model thread only
    # costs time when an unfinished iterator is deleted (a proxy child's), which waits for that thread.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
