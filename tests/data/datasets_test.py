"""Tests of `make_dataset` and `get_dataset_info` on Animal-MNIST, TFDS (mocked and prepared) and folders."""

import time

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sagan_tf import data


class SaganTfTinyImages(tfds.core.GeneratorBasedBuilder):
  """A TFDS data set prepared locally, so that real TFDS files are read."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=["ant", "bee", "cow"]),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(12), "test": self._generate_examples(6)}

  def _generate_examples(self, num_examples):
    rng = np.random.default_rng(num_examples)
    for i in range(num_examples):
      yield i, {"image": rng.integers(0, 256, (10 + i, 20, 3), dtype=np.uint8), "label": i % 3}


def _check_batch(images, labels, batch_size, image_size, num_classes):
  assert images.shape == (batch_size, image_size, image_size, 3) and images.dtype == tf.float32
  assert labels.shape == (batch_size,) and labels.dtype == tf.int32
  assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
  assert labels.numpy().min() >= 0 and labels.numpy().max() < max(num_classes, 1)


@pytest.mark.parametrize("image_size", [32, 16])
def test_animal_mnist(image_size):
  ds = data.make_dataset("animal_mnist", image_size=image_size, batch_size=8)
  for images, labels in ds.take(2):
    _check_batch(images, labels, 8, image_size, 10)


def test_animal_mnist_is_padded_with_background():
  ds = data.make_dataset("animal_mnist", image_size=32, batch_size=4, shuffle=False, repeat=False)
  images = next(iter(ds))[0].numpy()
  raw, _, _ = data.load_animal_mnist()
  np.testing.assert_array_equal(images[:, :2], -1.0)
  np.testing.assert_array_equal(images[:, :, -2:], -1.0)
  np.testing.assert_allclose(images[:, 2:30, 2:30, 1], raw[:4] / 127.5 - 1.0, atol=1e-6)


def test_animal_mnist_info():
  info = data.get_dataset_info("animal_mnist")
  assert (info.name, info.num_classes, info.num_examples) == ("animal_mnist", 10, 10000)
  assert len(info.class_names) == 10


def test_same_seed_same_batches():
  def first_batches(seed):
    ds = data.make_dataset("animal_mnist", image_size=32, batch_size=8, random_flip=True, seed=seed)
    return [(x.numpy(), y.numpy()) for x, y in ds.take(2)]

  for (x1, y1), (x2, y2) in zip(first_batches(3), first_batches(3)):
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
  assert not np.array_equal(first_batches(3)[0][1], first_batches(4)[0][1])


def test_unconditional_labels_are_zero():
  ds = data.make_dataset("animal_mnist", image_size=32, batch_size=8, conditional=False)
  _, labels = next(iter(ds))
  assert labels.dtype == tf.int32 and not labels.numpy().any()


def test_single_split_data_sets_refuse_other_splits():
  with pytest.raises(data.DataError, match="data.split"):
    data.make_dataset("animal_mnist", image_size=32, batch_size=8, split="test")


@pytest.mark.parametrize("name,num_classes", [("imagenet2012", 1000), ("cifar10", 10)])
def test_mocked_tfds(name, num_classes):
  with tfds.testing.mock_data(num_examples=6):
    info = data.get_dataset_info(name)
    assert info.num_classes == num_classes and len(info.class_names) == num_classes
    ds = data.make_dataset(name, image_size=16, batch_size=3, seed=0)
    for images, labels in ds.take(2):
      _check_batch(images, labels, 3, 16, num_classes)


def test_mocked_tfds_without_labels():
  with tfds.testing.mock_data(num_examples=4):
    assert data.get_dataset_info("lsun/bedroom").num_classes == 0
    images, labels = next(iter(data.make_dataset("lsun/bedroom", image_size=16, batch_size=2)))
    _check_batch(images, labels, 2, 16, 0)


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  """Data dir of SaganTfTinyImages, written in two files per split."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("sagan_tf_tiny_images", data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=2))
  return data_dir


def test_prepared_tfds_data_set(prepared_dir):
  info = data.get_dataset_info("sagan_tf_tiny_images", data_dir=prepared_dir)
  assert info.class_names == ("ant", "bee", "cow") and info.num_examples == 12
  ds = data.make_dataset("sagan_tf_tiny_images", data_dir=prepared_dir, image_size=8, batch_size=4,
                         shuffle=False, repeat=False)
  batches = list(ds)
  assert len(batches) == 3
  for images, labels in batches:
    _check_batch(images, labels, 4, 8, 3)
  with pytest.raises(data.DataError, match="no split 'validation'.*'test', 'train'"):
    data.get_dataset_info("sagan_tf_tiny_images", data_dir=prepared_dir, split="validation")


def test_prepared_tfds_shards_by_file(prepared_dir):
  def images(context):
    ds = data.make_dataset("sagan_tf_tiny_images", data_dir=prepared_dir, image_size=8, batch_size=2,
                           shuffle=False, repeat=False, input_context=context)
    return [image.tobytes() for batch, _ in ds for image in batch.numpy()]

  everything = images(None)
  shards = [images(tf.distribute.InputContext(2, i, 1)) for i in (0, 1)]
  assert len(shards[0]) == len(shards[1]) == 6
  assert sorted(shards[0] + shards[1]) == sorted(everything)


def test_not_prepared_tfds_fails_fast_with_build_hint(tmp_path):
  start = time.time()
  with pytest.raises(data.DataError, match=f"not prepared.*tfds build cifar10 --data_dir={tmp_path}"):
    data.get_dataset_info("cifar10", data_dir=str(tmp_path))
  with pytest.raises(data.DataError, match="tfds build cifar10"):
    data.make_dataset("cifar10", data_dir=str(tmp_path), image_size=32, batch_size=8)
  assert time.time() - start < 10


def test_not_prepared_imagenet_asks_for_manual_archives(tmp_path):
  with pytest.raises(data.DataError, match=f"ILSVRC2012_img_train.tar.*{tmp_path}/downloads/manual"):
    data.get_dataset_info("imagenet2012", data_dir=str(tmp_path))


def test_unknown_data_set(tmp_path):
  with pytest.raises(data.DataError, match="unknown data set 'no_such_set'"):
    data.get_dataset_info("no_such_set", data_dir=str(tmp_path))


def _write_folder(root, images_per_class):
  for class_name in ("a", "b"):
    for i in range(images_per_class):
      path = root / class_name / f"{i}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      # Each image is one flat value, so a batch tells which files it holds.
      value = 10 * i + (0 if class_name == "a" else 5)
      PIL.Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(path)


def _values(ds):
  return sorted(round(float(v)) for images, _ in ds for v in (images[:, 0, 0, 0].numpy() + 1) * 127.5)


def test_sharding_gives_disjoint_examples(tmp_path):
  _write_folder(tmp_path, images_per_class=4)
  shards = []
  for pipeline_id in (0, 1):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
    ds = data.make_dataset(f"folder:{tmp_path}", image_size=4, batch_size=2, shuffle=False, repeat=False,
                           input_context=context)
    shards.append(_values(ds))
  assert len(shards[0]) == len(shards[1]) == 4
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(10 * i + c for i in range(4) for c in (0, 5))


def test_too_few_examples_for_one_batch(tmp_path):
  _write_folder(tmp_path, images_per_class=1)
  with pytest.raises(data.DataError, match="fewer than batch_size=4"):
    data.make_dataset(f"folder:{tmp_path}", image_size=4, batch_size=4, repeat=False)


def test_bad_arguments():
  with pytest.raises(ValueError, match="batch_size"):
    data.make_dataset("animal_mnist", image_size=32, batch_size=0)
