"""The proxy's dataset loaders, on small IDX files the tests write (the real dataset is needed by one test only)."""

import gzip
import os
import re

import numpy as np
import pytest

from mnas.trainer import data


def write_idx(path, array, magic=None, truncate=0):
    """`data.write_idx`, then optionally a forged magic number or a cut-off tail (inside the gzip stream)."""
    path = str(path)
    data.write_idx(path, array)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    raw = (magic or raw[:4]) + raw[4:len(raw) - truncate]
    with opener(path, "wb") as handle:
        handle.write(raw)
    return path


def fake_fashion_mnist(folder, n_train=12, n_test=5, compress=True):
    """Four IDX files laid out like Debian's package, with random images and labels."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    os.makedirs(folder, exist_ok=True)
    for field, stem in data.FASHION_MNIST_FILES.items():
        data.write_idx(os.path.join(folder, stem + (".gz" if compress else "")), arrays[field])
    return arrays


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def test_read_idx_round_trips_values_and_types(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(data.read_idx(write_idx(tmp_path / "a.gz", images)), images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    out = data.read_idx(write_idx(tmp_path / "b", ints), expected_ndim=1)
    assert out.tolist() == [1, -2, 70000] and out.dtype == np.int32


def test_load_fashion_mnist_shapes_values_and_cache(tmp_path):
    arrays = fake_fashion_mnist(tmp_path)
    loaded = data.load_fashion_mnist(str(tmp_path))
    assert loaded.x_train.shape == (12, 28, 28, 1) and loaded.x_train.dtype == np.uint8
    assert loaded.x_test.shape == (5, 28, 28, 1)
    assert np.array_equal(loaded.x_train[..., 0], arrays["x_train"])
    assert loaded.y_test.tolist() == arrays["y_test"].tolist() and loaded.y_train.dtype == np.int64
    assert data.load_fashion_mnist(str(tmp_path)) is loaded  # decoded once per process
    assert not loaded.x_train.flags.writeable  # a cached array shared by children must not be mutated


def test_uncompressed_files_are_found_too(tmp_path):
    fake_fashion_mnist(tmp_path, compress=False)
    assert len(data.load_dataset("fashion-mnist", str(tmp_path)).y_train) == 12


def test_truncated_file_names_the_file(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((3, 28, 28), np.uint8), truncate=10)
    with pytest.raises(ValueError, match=r"x\.gz.*truncated"):
        data.read_idx(path)
    cut = tmp_path / "cut.gz"  # a half-downloaded gzip stream, not just a short payload
    cut.write_bytes(gzip.compress(b"\0" * 5000)[:40])
    with pytest.raises(ValueError, match=r"cut\.gz"):
        data.read_idx(str(cut))


def test_bad_magic_and_wrong_rank(tmp_path):
    path = write_idx(tmp_path / "m.gz", np.zeros((3, 4), np.uint8), magic=b"\x1f\x8b\x08\x02")
    with pytest.raises(ValueError, match=r"m\.gz.*magic"):
        data.read_idx(path)
    path = write_idx(tmp_path / "r.gz", np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match=r"r\.gz.*2 dimensions, expected 3"):
        data.read_idx(path, expected_ndim=3)


def test_images_and_labels_must_agree(tmp_path):
    fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match="12 images but .* 11 labels"):
        data.load_fashion_mnist(str(tmp_path))


def test_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(data.DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path / "nowhere"))
    fake_fashion_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path))


def test_registry_rejects_unknown_names():
    assert "fashion-mnist" in data.DATASETS
    with pytest.raises(ValueError, match="unknown dataset 'imagenet-22k'.*fashion-mnist"):
        data.load_dataset("imagenet-22k")


def test_pipeline_normalises_resizes_and_shuffles_by_seed():
    images = np.stack([np.full((28, 28, 1), v, np.uint8) for v in (0, 255, 51, 102, 153)])
    labels = np.arange(5)
    batches = list(data.make_pipeline(images, labels, batch_size=2))
    x, y = batches[0]
    assert x.shape == (2, 28, 28, 1) and [len(b[1]) for b in batches] == [2, 2, 1]
    assert np.allclose(x.numpy()[0], -1.0) and np.allclose(x.numpy()[1], 1.0)
    x, _ = next(iter(data.make_pipeline(images, labels, 5, image_size=32, fit="pad")))
    assert x.shape == (5, 32, 32, 1) and np.allclose(x.numpy()[1, 0, 0], -1.0) and np.allclose(x.numpy()[1, 16, 16], 1)
    x, _ = next(iter(data.make_pipeline(images, labels, 5, image_size=14)))
    assert x.shape == (5, 14, 14, 1)

    def order(seed):
        pipe = data.make_pipeline(images, labels, 5, shuffle=True, seed=seed)
        return next(iter(pipe))[1].numpy().tolist()

    assert order(3) == order(3) and sorted(order(3)) == labels.tolist()
    assert len({tuple(order(s)) for s in range(6)}) > 1


def test_pipeline_runs_without_autotuning():
    # With autotuning on, deleting a child's unfinished iterator waited up to 15 s for tf.data's model thread in
    # Tune's trial processes (BENCHMARKS.md, search overhead); every setting of the pipeline is fixed anyway.
    images, labels = np.zeros((8, 28, 28, 1), np.uint8), np.arange(8)
    for kwargs in ({}, {"shuffle": True, "drop_remainder": True}, {"image_size": 32, "fit": "pad"}):
        pipe = data.make_pipeline(images, labels, 4, **kwargs)
        assert pipe.options().autotune.enabled is False
        assert pipe.repeat().take(5).options().autotune.enabled is False   # as the proxy extends it
        iterator = iter(pipe.repeat())
        next(iterator)
        del iterator                                  # an unfinished iterator, as an early-stopped child leaves


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason=f"{data.FASHION_MNIST_DIR} absent: sudo apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    loaded = data.load_dataset("fashion-mnist")
    assert loaded.x_train.shape == (60000, 28, 28, 1) and loaded.x_test.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(loaded.y_train).tolist()) == list(range(10))


# ---- any arrays file (`npz`)


def test_npz_reads_a_file_or_its_folder_with_or_without_a_test_split(tmp_path):
    labels = np.array([[2], [0], [5], [1]])                             # [N, 1] labels are flattened
    np.savez(tmp_path / "mine.npz", x_train=np.zeros((4, 6, 6), np.uint8), y_train=labels.astype(np.int32))
    for where in (tmp_path, tmp_path / "mine.npz"):
        loaded = data.load_dataset("npz", str(where))
        assert loaded.x_train.shape == (4, 6, 6, 1) and loaded.y_train.tolist() == [2, 0, 5, 1]
        assert loaded.y_train.dtype == np.int64 and loaded.x_test.shape == (0, 6, 6, 1) and len(loaded.y_test) == 0
        assert data.num_classes_of("npz", loaded) == 6                     # the largest label + 1
    assert data.num_classes_of("cifar", loaded) == 10                      # a registered count wins
    assert not loaded.x_train.flags.writeable                              # cached arrays are read-only
    assert data.load_dataset("npz", str(tmp_path / "mine.npz")) is loaded  # read once per process ...
    np.savez(tmp_path / "mine.npz", x_train=np.ones((3, 6, 6, 3), np.uint8), y_train=np.arange(3),
             x_test=np.ones((2, 6, 6, 3), np.uint8), y_test=np.array([0, 7]))
    changed = data.load_dataset("npz", str(tmp_path / "mine.npz"))         # ... while the file stays the same
    assert changed.x_train.shape == (3, 6, 6, 3) and data.num_classes_of("npz", changed) == 8


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((2, 4, 4), np.uint8)}, "lacks y_train"),
    ({"x_train": np.zeros((2, 4, 4), np.float32), "y_train": [0, 1]}, "x_train must be uint8"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": [0.0, 1.0]}, "y_train must hold integer class indices"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": [0, -1]}, "negative label -1"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": [0, 1, 2]}, "x_train has 2 images but y_train has 3"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": [0, 1], "x_test": np.zeros((1, 4, 4), np.uint8)},
     "x_test without y_test"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": [0, 1], "x_test": np.zeros((1, 5, 5), np.uint8),
      "y_test": [0]}, "x_test images are (5, 5, 1) but x_train images are (4, 4, 1)"),
])
def test_npz_refuses_what_it_cannot_train_on(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=f"bad.npz: .*{re.escape(message)}"):
        data.load_dataset("npz", str(tmp_path / "bad.npz"))


def test_npz_needs_its_file(tmp_path):
    with pytest.raises(ValueError, match="dataset 'npz' needs a data_dir"):
        data.load_dataset("npz")
    with pytest.raises(data.DatasetMissing, match="no .npz file in"):
        data.load_dataset("npz", str(tmp_path))
    with pytest.raises(data.DatasetMissing, match="gone.npz does not exist"):
        data.load_dataset("npz", str(tmp_path / "gone.npz"))
    (tmp_path / "a.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(ValueError, match="a.npz: cannot read .npz"):
        data.load_dataset("npz", str(tmp_path / "a.npz"))
    (tmp_path / "b.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="2 .npz files, expected one"):
        data.load_dataset("npz", str(tmp_path))
