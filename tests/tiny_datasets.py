"""Small datasets the tests write themselves, in each form the data layer reads: an image folder of PNGs,
ImageNet TFRecord shards in the official schema, and an arrays file. Images are flat colours that depend on the
class, so a decoded image tells which example it was."""

import os

import numpy as np


def colour(label: int, number: int) -> tuple[int, int, int]:
    """The flat colour of example `number` of class `label`: red is the class, green and blue the example."""
    return 40 * label + 10, number % 256, number // 256 % 256


def png(label: int, number: int, side: int = 12) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(np.full((side, side, 3), colour(label, number), np.uint8)).numpy()


def jpeg(label: int, number: int, side: int = 12) -> bytes:
    import tensorflow as tf

    return tf.io.encode_jpeg(np.full((side, side, 3), colour(label, number), np.uint8), quality=95).numpy()


def write_png_folder(root, classes: int, per_class: int, split: bool = False, side: int = 12) -> str:
    """DIR/c0/, DIR/c1/, ... with `per_class` PNGs each (with `split`: DIR/train/<class>/ and 2 a class in
    DIR/val/<class>/). Numbers run over the whole folder, so no two images are alike."""
    root = str(root)
    train = os.path.join(root, "train") if split else root
    number = 0
    for label in range(classes):
        for folder, count in ((train, per_class), *(((os.path.join(root, "val"), 2),) if split else ())):
            os.makedirs(os.path.join(folder, f"c{label}"), exist_ok=True)
            for _ in range(count):
                with open(os.path.join(folder, f"c{label}", f"img{number:05d}.png"), "wb") as handle:
                    handle.write(png(label, number, side))
                number += 1
    return root


def example(encoded: bytes, label: int) -> bytes:
    """A serialized tf.train.Example of the official ImageNet schema (label 1..1000)."""
    import tensorflow as tf

    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
               "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_imagenet_shards(root, train: int, shards: int = 3, classes: int = 4, validation: int = 4,
                          side: int = 12, labels=None) -> str:
    """train-0000K-of-0000N shards holding `train` JPEG examples in class order (example i of class
    labels[i], default i * classes // train), and one validation shard. Stored labels are 1-based, as the
    official converter writes them."""
    import tensorflow as tf

    root = str(root)
    os.makedirs(root, exist_ok=True)
    labels = [i * classes // train for i in range(train)] if labels is None else list(labels)
    bounds = np.linspace(0, train, shards + 1).astype(int)
    for shard in range(shards):
        with tf.io.TFRecordWriter(os.path.join(root, f"train-{shard:05d}-of-{shards:05d}")) as writer:
            for i in range(bounds[shard], bounds[shard + 1]):
                writer.write(example(jpeg(labels[i], i, side), labels[i] + 1))
    with tf.io.TFRecordWriter(os.path.join(root, "validation-00000-of-00001")) as writer:
        for i in range(validation):
            writer.write(example(jpeg(i % classes, i, side), i % classes + 1))
    return root


def write_npz(path, train: int, classes: int, sorted_by_class: bool = True, side: int = 8, test: int = 0) -> str:
    """An arrays file: x_train uint8 [train, side, side, 1], y_train in class order (or shuffled), optional test."""
    rng = np.random.default_rng(0)
    labels = np.arange(train) * classes // train
    if not sorted_by_class:
        labels = rng.permutation(labels)
    arrays = {"x_train": rng.integers(0, 256, (train, side, side, 1), dtype=np.uint8), "y_train": labels}
    if test:
        arrays.update(x_test=rng.integers(0, 256, (test, side, side, 1), dtype=np.uint8),
                      y_test=np.arange(test) % classes)
    np.savez(str(path), **arrays)
    return str(path)
