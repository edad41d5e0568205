"""Every input format the trainer reads, written small by the test and read back through its pipeline."""

import os
import pickle

import numpy as np
import pytest

from mnas.trainer import data, pipelines


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def fake_fashion(folder, n_train=20, n_test=8):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    os.makedirs(folder, exist_ok=True)
    for field, stem in data.FASHION_MNIST_FILES.items():
        data.write_idx(os.path.join(folder, stem + ".gz"), arrays[field])
    return arrays


def test_fashion_mnist_idx_epochs_are_fixed_by_seed_and_epoch(tmp_path):
    arrays = fake_fashion(tmp_path)
    inp = pipelines.open_input("fashion-mnist", str(tmp_path))
    assert (inp.num_classes, inp.image_shape, inp.num_train, inp.num_eval) == (10, (28, 28, 1), 20, 8)
    assert inp.steps_per_epoch(6) == 3

    def labels(seed, epoch):
        return np.concatenate([y.numpy() for _, y in inp.train(6, seed, epoch)]).tolist()

    assert len(labels(0, 0)) == 18  # full batches only
    assert labels(0, 1) == labels(0, 1) and labels(0, 0) != labels(0, 1)
    x, y = next(iter(inp.evaluate(8)))
    expected = arrays["x_test"][..., None].astype(np.float32) * (2 / 255) - 1
    assert np.allclose(x.numpy(), expected, atol=1e-6) and y.numpy().tolist() == arrays["y_test"].tolist()
    samples = inp.samples(5)
    assert samples.shape == (5, 28, 28, 1)
    # Representative images for int8 calibration are training images, with evaluation preprocessing.
    train_images = arrays["x_train"][..., None].astype(np.float32) * (2 / 255) - 1
    for image in samples:
        assert np.abs(train_images - image).max(axis=(1, 2, 3)).min() < 1e-6
    resized = pipelines.open_input("fashion-mnist", str(tmp_path), image_size=32, fit="pad", train_limit=12)
    assert resized.image_shape == (32, 32, 1) and resized.num_train == 12


def cifar_batch(rng, n, fine=False):
    key = b"fine_labels" if fine else b"labels"
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: rng.integers(0, 10, n).tolist(),
            b"batch_label": b"testing"}


def test_cifar10_python_batches_read_back_as_nhwc(tmp_path):
    rng = np.random.default_rng(2)
    batches = {name: cifar_batch(rng, 3) for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    folder = tmp_path / "cifar-10-batches-py"  # as the official tarball unpacks
    folder.mkdir()
    for protocol, (name, batch) in enumerate(batches.items()):
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2 + protocol % 4)
    loaded = data.load_dataset("cifar", str(tmp_path))
    assert loaded.x_train.shape == (15, 32, 32, 3) and loaded.x_test.shape == (3, 32, 32, 3)
    first = batches["data_batch_1"][b"data"][0]
    assert np.array_equal(loaded.x_train[0, :, :, 0].ravel(), first[:1024])   # red plane
    assert np.array_equal(loaded.x_train[0, :, :, 2].ravel(), first[2048:])   # blue plane
    assert loaded.y_test.tolist() == batches["test_batch"][b"labels"]
    inp = pipelines.open_input("cifar", str(tmp_path))
    x, y = next(iter(inp.train(5, 0, 0)))
    assert x.shape == (5, 32, 32, 3) and float(x.numpy().min()) >= -1 and float(x.numpy().max()) <= 1


def test_cifar100_and_npz_and_refusals(tmp_path):
    rng = np.random.default_rng(3)
    c100 = tmp_path / "c100"
    c100.mkdir()
    for name in ("train", "test"):
        with open(c100 / name, "wb") as handle:
            pickle.dump(cifar_batch(rng, 4, fine=True), handle)
    assert data.load_dataset("cifar100", str(c100)).x_train.shape == (4, 32, 32, 3)

    npz = tmp_path / "npz"
    npz.mkdir()
    np.savez(npz / "mine.npz", x_train=np.zeros((6, 32, 32, 3), np.uint8), y_train=np.arange(6),
             x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.array([[1], [2]]))
    loaded = data.load_dataset("cifar", str(npz))
    assert loaded.y_test.tolist() == [1, 2] and loaded.y_train.dtype == np.int64

    evil = tmp_path / "evil"
    evil.mkdir()
    for name in ("train", "test"):
        with open(evil / name, "wb") as handle:
            pickle.dump({b"data": os.system}, handle)  # a pickle that names a callable: never resolved
    with pytest.raises(ValueError, match="refusing to load posix.system|refusing to load os.system"):
        data.load_dataset("cifar", str(evil))
    partial = tmp_path / "partial"
    partial.mkdir()
    with open(partial / "data_batch_1", "wb") as handle:
        pickle.dump(cifar_batch(rng, 2), handle)
    with pytest.raises(data.DatasetMissing, match="incomplete.*test_batch"):
        data.load_dataset("cifar", str(partial))
    with pytest.raises(data.DatasetMissing, match="no CIFAR data"):
        data.load_dataset("cifar", str(tmp_path / "c100" / ".."))  # a folder with neither layout


def _jpeg(tf, colour, height=40, width=56):
    image = np.zeros((height, width, 3), np.uint8) + np.array(colour, np.uint8)
    return tf.io.encode_jpeg(image, quality=95).numpy()


def test_imagenet_tfrecords_inception_crops_and_centre_crops(tmp_path):
    import tensorflow as tf

    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]

    def example(colour, label):
        feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_jpeg(tf, colour)])),
                   "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                   "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"]))}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    for name, count in (("train-00000-of-00002", 6), ("train-00001-of-00002", 6), ("validation-00000-of-00001", 3)):
        with tf.io.TFRecordWriter(str(tmp_path / name)) as writer:
            for i in range(count):
                writer.write(example(colours[i % 3], i % 3 + 1))  # labels 1..3, as the official converter
    inp = pipelines.open_input("imagenet", str(tmp_path), image_size=24, num_classes=3)
    assert (inp.num_train, inp.num_eval, inp.image_shape) == (12, 3, (24, 24, 3))
    x, y = next(iter(inp.evaluate(3)))
    assert y.numpy().tolist() == [0, 1, 2]
    # A centre crop of a flat colour is that colour: red, green, blue in [-1, 1].
    means = x.numpy().mean(axis=(1, 2))
    assert np.argmax(means, axis=1).tolist() == [0, 1, 2] and means.max() > 0.9
    batches = [(bx.numpy(), by.numpy()) for bx, by in inp.train(4, seed=5, epoch=0)]
    assert len(batches) == 3 and batches[0][0].shape == (4, 24, 24, 3)
    again = [(bx.numpy(), by.numpy()) for bx, by in inp.train(4, seed=5, epoch=0)]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    for bx, by in batches:  # crops of one flat-coloured image keep its colour, whatever the box
        assert (np.argmax(bx.mean(axis=(1, 2)), axis=1) == by).all()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-00000-of-00001").write_bytes(b"not a tfrecord at all" * 10)
    (bad / "validation-00000-of-00001").write_bytes(b"nor this" * 10)
    with pytest.raises(ValueError, match="not TFRecord files|cannot read"):
        pipelines.open_input("imagenet", str(bad), image_size=24)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetMissing, match="train-\\* and validation-\\*"):
        pipelines.open_input("imagenet", str(tmp_path / "empty"), image_size=24)


def test_imagenet_training_takes_inception_crops_and_evaluation_the_centre_crop(tmp_path):
    """On an image whose red channel encodes the column and green the row, each output image tells which box of
    the original it shows and whether it was flipped."""
    import tensorflow as tf

    height, width, size = 64, 96, 16
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols * 255 / (width - 1), rows * 255 / (height - 1), np.full(rows.shape, 128)], -1)
    encoded = tf.io.encode_jpeg(np.round(image).astype(np.uint8), quality=100).numpy()
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}
    record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    for name, count in (("train-00000-of-00001", 32), ("validation-00000-of-00001", 2)):
        with tf.io.TFRecordWriter(str(tmp_path / name)) as writer:
            for _ in range(count):
                writer.write(record)
    inp = pipelines.open_input("imagenet", str(tmp_path), image_size=size, num_classes=1)

    # Evaluation: the official centre crop, side size / (size + 32) of the shorter edge, bicubic to `size`.
    side = int(size / (size + pipelines.CROP_PADDING) * height)
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    decoded = tf.io.decode_jpeg(encoded, channels=3)
    expected = tf.image.resize(decoded[top:top + side, left:left + side], [size, size], method="bicubic")
    expected = np.clip(expected.numpy(), 0, 255) * (2 / 255) - 1
    x, y = next(iter(inp.evaluate(2)))
    assert y.numpy().tolist() == [0, 0]
    np.testing.assert_allclose(x.numpy()[0], expected, atol=1e-5)
    np.testing.assert_array_equal(x.numpy()[0], x.numpy()[1])

    # Training: random boxes of 8-100% of the image, aspect ratio 3/4 to 4/3, flipped half of the time.
    crops = np.concatenate([bx.numpy() for bx, _ in inp.train(8, seed=3, epoch=0)])
    assert crops.shape == (32, size, size, 3)
    pixels = (crops + 1) * 127.5
    box_w = (pixels[..., 0].max(axis=(1, 2)) - pixels[..., 0].min(axis=(1, 2))) / 255 * (width - 1) + 1
    box_h = (pixels[..., 1].max(axis=(1, 2)) - pixels[..., 1].min(axis=(1, 2))) / 255 * (height - 1) + 1
    area, aspect = box_w * box_h / (width * height), box_w / box_h
    assert area.min() > 0.06 and area.max() <= 1.0 and area.max() - area.min() > 0.4
    assert aspect.min() > 3 / 4 - 0.1 and aspect.max() < 4 / 3 + 0.1
    flipped = pixels[:, :, 0, 0].mean(axis=1) > pixels[:, :, -1, 0].mean(axis=1)  # red falls left to right
    assert 0 < flipped.sum() < len(flipped)
    assert not any(np.allclose(crop, expected, atol=0.05) for crop in crops[~flipped])  # not the eval crop


def _png_tree(tf, root, classes, per_class):
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = np.full((20 + i, 30, 3), 40 * c + i, np.uint8)
            (folder / f"img{i}.png").write_bytes(tf.io.encode_png(image).numpy())


def test_image_folder_train_val_and_flat_layouts(tmp_path):
    import tensorflow as tf

    _png_tree(tf, tmp_path / "split" / "train", ["cat", "dog"], 4)
    _png_tree(tf, tmp_path / "split" / "val", ["cat", "dog"], 2)
    (tmp_path / "split" / "train" / "cat" / "notes.txt").write_text("ignored")
    jpeg = tf.io.encode_jpeg(np.full((24, 24, 3), 200, np.uint8)).numpy()
    (tmp_path / "split" / "train" / "dog" / "photo.JPG").write_bytes(jpeg)  # JPEG too, any case of extension
    inp = pipelines.open_input("folder", str(tmp_path / "split"), image_size=16)
    assert (inp.num_classes, inp.num_train, inp.num_eval) == (2, 9, 4)
    labels = np.concatenate([y.numpy() for _, y in inp.evaluate(3)]).tolist()
    assert labels == [0, 0, 1, 1]
    x, _ = next(iter(inp.train(4, 0, 0)))
    assert x.shape == (4, 16, 16, 3)
    train_labels = np.concatenate([y.numpy() for _, y in inp.train(3, 0, 0)])
    assert sorted(train_labels.tolist()) == [0] * 4 + [1] * 5  # every training image once an epoch

    _png_tree(tf, tmp_path / "flat", ["a", "b", "c"], 10)
    flat = pipelines.open_input("folder", str(tmp_path / "flat"), image_size=16)
    assert (flat.num_classes, flat.num_train, flat.num_eval) == (3, 27, 3)  # every 10th image held out
    with pytest.raises(ValueError, match="3 class folders, but 5"):
        pipelines.open_input("folder", str(tmp_path / "flat"), image_size=16, num_classes=5)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty/x: class folder has no .jpg/.jpeg/.png images"):
        pipelines.open_input("folder", str(tmp_path / "empty"), image_size=16)
    (tmp_path / "empty" / "x").rmdir()
    with pytest.raises(data.DatasetMissing, match="no .* images in class subfolders"):
        pipelines.open_input("folder", str(tmp_path / "empty"), image_size=16)
    (tmp_path / "split" / "train" / "bird").mkdir()             # an empty class in train/
    with pytest.raises(ValueError, match="train/bird: class folder has no"):
        pipelines.open_input("folder", str(tmp_path / "split"), image_size=16)
    with pytest.raises(data.DatasetMissing, match="does not exist"):
        pipelines.open_input("folder", str(tmp_path / "nowhere"), image_size=16)


def test_an_arrays_file_trains_with_its_own_classes_and_needs_a_test_split_to_evaluate(tmp_path):
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "mine.npz", x_train=rng.integers(0, 256, (12, 10, 10, 3), dtype=np.uint8),
             y_train=np.arange(12) % 7, x_test=rng.integers(0, 256, (4, 10, 10, 3), dtype=np.uint8),
             y_test=np.array([0, 1, 2, 3]))
    inp = pipelines.open_input("npz", str(tmp_path / "mine.npz"))
    assert (inp.num_classes, inp.image_shape, inp.num_train, inp.num_eval) == (7, (10, 10, 3), 12, 4)
    assert np.concatenate([y.numpy() for _, y in inp.evaluate(3)]).tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "train-only.npz", x_train=np.zeros((12, 10, 10), np.uint8), y_train=np.arange(12) % 3)
    with pytest.raises(ValueError, match="no test images \\(x_test, y_test\\), which `train` evaluates on"):
        pipelines.open_input("npz", str(tmp_path / "train-only.npz"))
