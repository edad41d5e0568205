"""The training split, numbered and drawn from by index (trainer/splits.py): what the proxy task reads.

Every image the tests write is a flat colour that encodes its class and its number (tests/tiny_datasets.py), so a
decoded batch says exactly which examples it holds -- crops and flips of a flat image keep its colour.
"""

import os

import numpy as np
import pytest

from mnas.trainer import data, pipelines, splits
from tiny_datasets import colour, example, jpeg, png, write_imagenet_shards, write_npz, write_png_folder


@pytest.fixture(autouse=True)
def fresh_caches():
    data.clear_cache()
    yield
    data.clear_cache()


def identities(images) -> list[tuple[int, int]]:
    """(class, number) of each flat-coloured image in a batch of [-1, 1] floats (tiny_datasets.colour)."""
    pixels = np.round((np.asarray(images).mean(axis=(1, 2)) + 1) * 127.5).astype(int)
    return [((red - 10) // 40, green + 256 * blue) for red, green, blue in pixels]


def epochs_of(examples, batch_size, seed, steps, size=8):
    return [identities(x.numpy()) for x, _ in examples.training_batches(batch_size, size, seed, steps)]


# ---- in memory


def test_an_array_split_is_indexed_in_place(tmp_path):
    path = write_npz(tmp_path / "a.npz", 40, 4)
    split = splits.open_training_split("npz", path)
    assert (split.size, split.num_classes, split.streamed) == (40, 4, False)
    head = split.take(slice(0, 10))
    assert np.shares_memory(head.images, split.source.images)        # a slice is a view: the old fast path
    picked = split.take(np.array([39, 0, 7]))
    assert picked.labels.tolist() == [3, 0, 0] and picked.count == 3 and picked.channels == 1
    assert split.labels_of(np.array([39, 10])).tolist() == [3, 1]
    with pytest.raises(ValueError, match="training label 3 does not fit 2 classes"):
        splits.open_training_split("npz", path, num_classes=2)


# ---- image folders


def test_a_folder_split_reads_only_its_selected_files_each_once_an_epoch(tmp_path):
    root = write_png_folder(tmp_path / "f", classes=3, per_class=20)
    split = splits.open_training_split("folder", root)
    # flat layout: every 10th image of a class is kept for `train` to evaluate on; the split is the other 54
    assert (split.size, split.num_classes, split.streamed) == (54, 3, True)
    chosen = np.random.default_rng(0).permutation(split.size)[:20]
    for number in sorted(set(range(split.size)) - set(chosen.tolist())):
        with open(split.source.paths[number], "wb") as handle:      # anything read outside the selection fails
            handle.write(b"garbage")
    examples = split.take(chosen)
    examples.check()
    names = [os.path.basename(p) for p in split.source.paths[chosen]]
    expected = sorted((int(label), int(name[3:8])) for label, name in zip(split.labels_of(chosen), names))

    batches = epochs_of(examples, batch_size=5, seed=1, steps=8)          # 4 full batches an epoch, 2 epochs
    assert len(batches) == 8
    first, second = sum(batches[:4], []), sum(batches[4:], [])
    assert sorted(first) == sorted(second) == expected                    # every example once an epoch
    assert first != second                                                # in a new order
    assert epochs_of(examples, 5, seed=1, steps=8) == batches             # fixed by the seed
    assert epochs_of(examples, 5, seed=2, steps=4) != batches[:4]

    scored = list(examples.scoring_batches(6, 8))
    assert [len(y) for _, y in scored] == [6, 6, 6, 2]
    assert np.concatenate([y.numpy() for _, y in scored]).tolist() == examples.known_labels().tolist()
    assert sorted(sum((identities(x.numpy()) for x, _ in scored), [])) == expected
    assert examples.head(3).known_labels().tolist() == examples.known_labels()[:3].tolist()
    with pytest.raises(ValueError, match="not a JPEG or PNG image"):
        split.take(np.arange(split.size)).check()


def test_a_folder_with_train_and_val_draws_only_from_train(tmp_path):
    root = write_png_folder(tmp_path / "f", classes=2, per_class=6, split=True)
    split = splits.open_training_split("folder", root)
    assert (split.size, split.num_classes) == (12, 2)
    assert all(os.sep + "train" + os.sep in path for path in split.source.paths)
    with pytest.raises(ValueError, match="2 class folders, but 5 classes"):
        splits.open_training_split("folder", root, num_classes=5)


# ---- TFRecord shards


def test_the_record_index_finds_every_record_of_every_shard(tmp_path):
    root = write_imagenet_shards(tmp_path / "r", train=50, shards=3, classes=5)
    split = splits.open_training_split("imagenet", root, num_classes=5)
    index = split.source.index
    assert (split.size, split.num_classes, split.streamed) == (50, 5, True)
    assert index.counts.tolist() == [16, 17, 17] and index.starts.tolist() == [0, 16, 33]
    assert split.labels_of(np.arange(50)).tolist() == [i * 5 // 50 for i in range(50)]
    with open(index.files[1], "rb") as handle:                          # offsets point at the payloads
        handle.seek(int(index.offsets[16 + 3]))
        assert handle.read(int(index.lengths[19])) == example(jpeg(1, 19), 2)
    assert splits.index_records(list(index.files)) is index             # scanned once per process


@pytest.mark.parametrize("share", [0.9, 0.05], ids=["whole-shards", "one-by-one"])
def test_records_are_read_by_selection_and_unselected_ones_are_never_parsed(tmp_path, share):
    """Odd records are not Examples at all: parsing one would fail. Whole-shard reading drops them before
    parsing; reading one by one never touches them. (PNG, not JPEG, bytes: lossless, so colours are exact.)"""
    import tensorflow as tf

    root = tmp_path / "r"
    root.mkdir()
    for shard in range(2):
        with tf.io.TFRecordWriter(str(root / f"train-{shard:05d}-of-00002")) as writer:
            for i in range(shard * 40, shard * 40 + 40):
                writer.write(example(png(i % 3, i), i % 3 + 1) if i % 2 == 0 else b"not an Example " * 3)
    split = splits.open_training_split("imagenet", str(root), num_classes=3)
    evens = np.arange(0, 80, 2)
    chosen = np.random.default_rng(1).permutation(evens)[:max(2, int(share * 80))]
    examples = split.take(chosen)
    whole = len(chosen) >= splits.SEQUENTIAL_SHARE * 80
    assert whole == (share > 0.5)
    scored = sum((identities(x.numpy()) for x, _ in examples.scoring_batches(7, 8)), [])
    expected = [(int(i) % 3, int(i)) for i in chosen]
    if whole:
        assert sorted(scored) == sorted(expected)                         # file order, shards interleaved
    else:
        assert scored == expected                                          # the selection's own order
    steps = len(chosen) // 2
    batches = epochs_of(examples, batch_size=2, seed=3, steps=2 * steps)
    assert sorted(sum(batches[:steps], [])) == sorted(sum(batches[steps:], [])) == sorted(expected)
    assert batches == epochs_of(examples, 2, seed=3, steps=2 * steps)


def test_a_truncated_or_foreign_shard_is_refused_naming_it(tmp_path):
    root = write_imagenet_shards(tmp_path / "r", train=12, shards=2)
    shard = os.path.join(root, "train-00001-of-00002")
    with open(shard, "r+b") as handle:
        handle.truncate(os.path.getsize(shard) - 30)
    with pytest.raises(ValueError, match="train-00001-of-00002: not a complete TFRecord file: the record at byte"):
        splits.open_training_split("imagenet", root)
    with open(shard, "w") as handle:
        handle.write("<html>this download went wrong</html>")
    with pytest.raises(ValueError, match="train-00001-of-00002: not a complete TFRecord file"):
        splits.open_training_split("imagenet", root)
    os.remove(shard)
    os.remove(os.path.join(root, "train-00000-of-00002"))
    with pytest.raises(data.DatasetMissing, match="no TFRecord shards train-"):
        splits.open_training_split("imagenet", root)


def test_a_record_whose_label_does_not_fit_stops_the_pipeline(tmp_path):
    import tensorflow as tf

    root = write_imagenet_shards(tmp_path / "r", train=10, shards=1, classes=4)
    split = splits.open_training_split("imagenet", root, num_classes=3)   # labels 0..3 stored as 1..4
    assert split.labels_of(np.arange(10)).max() == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="image/class/label above 3"):
        list(split.take(np.arange(10)).scoring_batches(10, 8))


def test_a_split_needs_its_folder_and_names_every_dataset(tmp_path):
    with pytest.raises(data.DatasetMissing, match="does not exist"):
        splits.open_training_split("folder", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs a data_dir"):
        splits.open_training_split("imagenet")
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist-9' \(known: cifar, cifar100, fashion-mnist, "
                                         r"folder, imagenet, npz\)"):
        splits.open_training_split("mnist-9")
    assert pipelines.FILE_DATASETS == ("imagenet", "folder")
    assert colour(1, 300) == (50, 44, 1)
