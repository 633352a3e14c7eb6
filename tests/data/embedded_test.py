"""Tests of loading Animal-MNIST and of the restricted unpickler that reads it."""

import gzip
import io
import os
import pickle
import shutil

import numpy as np
import pytest

from sagan_tf import data
from sagan_tf.data import embedded


def _package_dir():
  return embedded._package_data_dir()


class _RunsCommand:
  """Pickles to a call of os.system, as a tampered data file would."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def _write_gzipped(path, payload):
  with gzip.open(path, "wb") as f:
    f.write(payload)


def test_loads_ten_thousand_images_in_ten_classes():
  images, labels, class_names = data.load_animal_mnist()
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (10000,) and labels.dtype == np.int64
  assert len(class_names) == 10 and class_names[0] == "bear" and class_names[-1] == "zebra"
  # The package describes 1,000 pictures for each of the 10 animals.
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1000))
  assert images.max() == 255 and images.min() == 0


def test_loaded_arrays_are_cached_and_read_only():
  first, _, _ = data.load_animal_mnist()
  second, _, _ = data.load_animal_mnist()
  assert first is second
  with pytest.raises(ValueError):
    first[0, 0, 0] = 1


def test_unpickler_reads_numpy_arrays():
  # Protocols 3 and 4, as the package files use; protocol 2 would need
  # `_codecs.encode` and 5 `_frombuffer`, which stay refused.
  for protocol in (3, 4):
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    loaded = embedded.NumpyArrayUnpickler(io.BytesIO(pickle.dumps(array, protocol=protocol))).load()
    np.testing.assert_array_equal(loaded, array)


def test_unpickler_refuses_os_system(tmp_path):
  marker = tmp_path / "ran"
  payload = pickle.dumps(_RunsCommand(f"touch {marker}"))
  with pytest.raises(pickle.UnpicklingError, match="system"):
    embedded.NumpyArrayUnpickler(io.BytesIO(payload)).load()
  assert not marker.exists()


def test_load_refuses_tampered_file(tmp_path):
  marker = tmp_path / "ran"
  _write_gzipped(tmp_path / embedded.IMAGES_FILE, pickle.dumps(_RunsCommand(f"touch {marker}")))
  shutil.copy(_package_dir() / embedded.LABELS_FILE, tmp_path / embedded.LABELS_FILE)
  with pytest.raises(data.DataError, match=f"{embedded.IMAGES_FILE}.*refused global"):
    data.load_animal_mnist(directory=tmp_path)
  assert not marker.exists()


def test_truncated_file_names_the_file(tmp_path):
  raw = (_package_dir() / embedded.IMAGES_FILE).read_bytes()
  (tmp_path / embedded.IMAGES_FILE).write_bytes(raw[:len(raw) // 2])
  shutil.copy(_package_dir() / embedded.LABELS_FILE, tmp_path / embedded.LABELS_FILE)
  with pytest.raises(data.DataError, match=embedded.IMAGES_FILE):
    data.load_animal_mnist(directory=tmp_path)


def test_not_gzip_names_the_file(tmp_path):
  shutil.copy(_package_dir() / embedded.IMAGES_FILE, tmp_path / embedded.IMAGES_FILE)
  (tmp_path / embedded.LABELS_FILE).write_bytes(b"not a gzip file")
  with pytest.raises(data.DataError, match=embedded.LABELS_FILE):
    data.load_animal_mnist(directory=tmp_path)


def test_wrong_shape_names_the_file(tmp_path):
  _write_gzipped(tmp_path / embedded.IMAGES_FILE, pickle.dumps(np.zeros((5, 28, 28), np.uint8)))
  shutil.copy(_package_dir() / embedded.LABELS_FILE, tmp_path / embedded.LABELS_FILE)
  with pytest.raises(data.DataError, match=f"{embedded.IMAGES_FILE}.*shape"):
    data.load_animal_mnist(directory=tmp_path)


def test_missing_file_is_a_data_error(tmp_path):
  with pytest.raises(data.DataError, match="not found"):
    data.load_animal_mnist(directory=tmp_path)


def test_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(embedded, "_PACKAGE", "animal_mnist_not_installed")
  with pytest.raises(data.DataError, match="pip install animal-mnist"):
    _package_dir()
