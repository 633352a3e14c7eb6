"""Tests of class-folder data sets: layout checks, labels and decoded pixels."""

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from sagan_tf import data
from sagan_tf.data import folder


def _save(path, array, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  PIL.Image.fromarray(array, mode).save(path)


def _rgb(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def class_folder(tmp_path):
  """Three classes, given out of sort order, of PNG, JPEG, grayscale and RGBA images."""
  root = tmp_path / "images"
  _save(root / "zebra" / "a.png", _rgb(12, 20, 1))
  _save(root / "zebra" / "b.jpg", _rgb(30, 18, 2))
  _save(root / "ant" / "a.png", np.full((9, 9), 77, np.uint8))  # grayscale
  _save(root / "ant" / "nested" / "b.PNG", _rgb(16, 16, 3))
  rgba = np.concatenate([_rgb(10, 14, 4), np.full((10, 14, 1), 128, np.uint8)], axis=-1)
  _save(root / "cow" / "a.png", rgba)
  (root / "cow" / "notes.txt").write_text("not an image")
  (root / "cow" / "._a.png").write_bytes(b"macOS resource fork")
  return root


def test_listing_maps_sorted_folder_names_to_labels(class_folder):
  listing = folder.list_image_folder(str(class_folder))
  assert listing.class_names == ("ant", "cow", "zebra")
  assert listing.num_skipped == 2
  names = [(p.split("/")[-2], label) for p, label in zip(listing.paths, listing.labels)]
  assert names == [("ant", 0), ("nested", 0), ("cow", 1), ("zebra", 2), ("zebra", 2)]


def test_dataset_info(class_folder):
  info = data.get_dataset_info(f"folder:{class_folder}")
  assert info.num_classes == 3 and info.class_names == ("ant", "cow", "zebra")
  assert info.num_examples == 5


def test_make_dataset_shapes_and_labels(class_folder):
  ds = data.make_dataset(f"folder:{class_folder}", image_size=8, batch_size=5, shuffle=False, repeat=False)
  (images, labels), = list(ds)
  assert images.shape == (5, 8, 8, 3) and images.dtype == tf.float32
  assert labels.dtype == tf.int32
  np.testing.assert_array_equal(labels.numpy(), [0, 0, 1, 2, 2])
  assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
  # The grayscale image, value 77, comes out as three equal channels.
  np.testing.assert_allclose(images[0].numpy(), 77 / 127.5 - 1.0, atol=1e-5)


def test_pixels_are_the_centre_square_in_unit_range(tmp_path):
  image = _rgb(6, 10, 5)
  _save(tmp_path / "a" / "x.png", image)
  _save(tmp_path / "b" / "x.png", image)
  ds = data.make_dataset(f"folder:{tmp_path}", image_size=6, batch_size=1, shuffle=False, repeat=False)
  first = next(iter(ds))[0][0].numpy()
  np.testing.assert_allclose(first, image[:, 2:8] / 127.5 - 1.0, atol=1e-6)


def test_missing_folder(tmp_path):
  with pytest.raises(data.DataError, match="does not exist"):
    data.get_dataset_info(f"folder:{tmp_path / 'nope'}")


def test_empty_folder(tmp_path):
  with pytest.raises(data.DataError, match="no class sub-folders"):
    data.get_dataset_info(f"folder:{tmp_path}")


def test_class_folder_without_images(tmp_path):
  _save(tmp_path / "a" / "x.png", _rgb(4, 4))
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "readme.txt").write_text("no images here")
  with pytest.raises(data.DataError, match=r"b has no images"):
    data.get_dataset_info(f"folder:{tmp_path}")


def test_images_in_root_without_class_folders(tmp_path):
  _save(tmp_path / "x.png", _rgb(4, 4))
  _save(tmp_path / "y.jpg", _rgb(4, 4))
  with pytest.raises(data.DataError, match="directly in it.*one sub-folder per class"):
    data.make_dataset(f"folder:{tmp_path}", image_size=8, batch_size=1)


def test_single_class_refused_for_conditional_model(tmp_path):
  _save(tmp_path / "only" / "x.png", _rgb(4, 4))
  with pytest.raises(data.DataError, match="only one class sub-folder 'only'.*model.num_classes=0"):
    data.make_dataset(f"folder:{tmp_path}", image_size=8, batch_size=1)
  ds = data.make_dataset(f"folder:{tmp_path}", image_size=8, batch_size=1, conditional=False,
                         shuffle=False, repeat=False)
  assert next(iter(ds))[1].numpy().tolist() == [0]


def test_corrupt_image_is_named(tmp_path):
  _save(tmp_path / "a" / "good.png", _rgb(4, 4))
  _save(tmp_path / "b" / "good.jpg", _rgb(8, 8))
  raw = (tmp_path / "b" / "good.jpg").read_bytes()
  (tmp_path / "b" / "broken.jpg").write_bytes(raw[:len(raw) // 2])
  with pytest.raises(data.DataError, match="broken.jpg"):
    data.get_dataset_info(f"folder:{tmp_path}")


def test_format_tensorflow_cannot_decode_is_named(tmp_path):
  _save(tmp_path / "a" / "good.png", _rgb(4, 4))
  _save(tmp_path / "b" / "good.png", _rgb(4, 4))
  PIL.Image.fromarray(_rgb(4, 4)).save(tmp_path / "a" / "really_a_tiff.png", format="TIFF")
  with pytest.raises(data.DataError, match=r"really_a_tiff.png: cannot be read as an image by "
                     r"TensorFlow \(InvalidArgumentError: Unknown image file format"):
    data.get_dataset_info(f"folder:{tmp_path}")


def _mixed_folder(root):
  """Good images next to one bad file of each kind the issue found."""
  _save(root / "a" / "good.png", _rgb(6, 6))
  _save(root / "b" / "good.jpg", _rgb(8, 8))
  (root / "a" / "empty.jpg").write_bytes(b"")
  (root / "a" / "text.png").write_text("hello")
  (root / "b" / "link.jpg").symlink_to(root / "nowhere.jpg")
  raw = (root / "b" / "good.jpg").read_bytes()
  (root / "b" / "truncated.jpg").write_bytes(raw[:len(raw) // 2])
  return {str(root / "a" / "empty.jpg"), str(root / "a" / "text.png"), str(root / "b" / "link.jpg"),
          str(root / "b" / "truncated.jpg")}


def test_every_file_the_pipeline_decoder_rejects_is_found(tmp_path, monkeypatch):
  monkeypatch.setenv("SAGAN_TF_CACHE", str(tmp_path / "cache"))
  bad = _mixed_folder(tmp_path / "images")
  listing = folder.list_image_folder(str(tmp_path / "images"))
  found = dict(folder.find_bad_images(listing.paths))
  assert set(found) == bad
  # The independent truth: the pipeline's own decode op on each file.
  for path in listing.paths:
    try:
      tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
      assert path not in found
    except tf.errors.OpError:
      assert path in found
  assert "Input is empty" in found[str(tmp_path / "images" / "a" / "empty.jpg")]
  assert "No such file or directory" in found[str(tmp_path / "images" / "b" / "link.jpg")]


def test_bad_images_refused_or_skipped_with_a_count(tmp_path, monkeypatch):
  monkeypatch.setenv("SAGAN_TF_CACHE", str(tmp_path / "cache"))
  bad = _mixed_folder(tmp_path / "images")
  dataset = f"folder:{tmp_path / 'images'}"
  with pytest.raises(data.DataError, match=r"a/empty.jpg: cannot be read as an image by "
                     r"TensorFlow .*\(3 more such files\); .*data.skip_bad_images=true"):
    data.get_dataset_info(dataset)
  info = data.get_dataset_info(dataset, skip_bad_images=True)
  assert {path for path, _ in info.skipped} == bad
  assert info.num_examples == 2 and info.class_names == ("a", "b")
  ds = data.make_dataset(dataset, image_size=8, batch_size=2, shuffle=False, repeat=False,
                         skip_bad_images=True)
  images, labels = next(iter(ds))
  assert images.shape == (2, 8, 8, 3) and sorted(labels.numpy().tolist()) == [0, 1]
  with pytest.raises(data.DataError, match="cannot be read as an image"):
    data.make_dataset(dataset, image_size=8, batch_size=2)


def test_scan_is_cached_by_file_list_sizes_and_mtimes(tmp_path, monkeypatch):
  monkeypatch.setenv("SAGAN_TF_CACHE", str(tmp_path / "cache"))
  root = tmp_path / "images"
  _save(root / "a" / "x.png", _rgb(6, 6))
  _save(root / "b" / "y.png", _rgb(6, 6))
  listing = folder.list_image_folder(str(root))
  calls = []
  real = folder.find_bad_images
  monkeypatch.setattr(folder, "find_bad_images", lambda paths: calls.append(1) or real(paths))
  folder.check_images(listing)
  folder._SCANS.clear()  # pylint: disable=protected-access
  folder.check_images(listing)  # From the cache file: no new scan.
  assert len(calls) == 1
  assert len(list((tmp_path / "cache" / "image_checks").iterdir())) == 1
  (root / "b" / "y.png").write_bytes(b"garbage now")  # Size and mtime change: scanned again.
  with pytest.raises(data.DataError, match="y.png: cannot be read"):
    folder.check_images(folder.list_image_folder(str(root)))
  assert len(calls) == 2
