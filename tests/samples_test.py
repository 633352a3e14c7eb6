"""Tests of the training sample grid: enlarged cells, one row per class, class names at the left."""

import os

import numpy as np
import PIL.Image

from sagan_tf import samples
from sagan_tf.training import run_dir
from sagan_tf.training import trainer as trainer_lib
from tests.reliability import constant_batches, tiny_config

PAD = 2


def cell(grid, row, column, size, left):
  """Cell (row, column) of a grid with `size`-pixel cells, PAD padding, `left` margin pixels."""
  top, start = PAD + row * (size + PAD), left + PAD + column * (size + PAD)
  return grid[top:top + size, start:start + size]


def test_cell_scale_reaches_96_pixels():
  assert [samples.cell_scale(s) for s in (32, 48, 64, 96, 128)] == [3, 2, 2, 1, 1]


def test_labelled_grid_enlarges_cells_and_names_every_row(rng):
  images = rng.uniform(-1, 1, (3 * 4, 32, 32, 3)).astype(np.float32)
  names = ["ant", "bee", "elephant"]
  grid = samples.labelled_grid(images, 4, names)
  left = 7 * len("elephant") + 8  # The margin fits the longest name.
  assert grid.shape == (3 * (96 + PAD) + PAD, left + 4 * (96 + PAD) + PAD, 3)
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  for index in range(12):
    row, column = divmod(index, 4)
    expected = np.repeat(np.repeat(pixels[index], 3, axis=0), 3, axis=1)
    np.testing.assert_array_equal(cell(grid, row, column, 96, left), expected)
  for row in range(3):
    strip = grid[PAD + row * 98:PAD + row * 98 + 96, :left]
    assert (strip < 128).any(), f"no text in the label strip of row {row}"
  assert (samples.labelled_grid(images, 4).shape == (3 * 98 + PAD, 4 * 98 + PAD, 3))


def test_row_names_fall_back_to_label_numbers():
  assert samples.row_names([0, 2, 3], ["cat", "dog", "emu"]) == ["cat", "emu", "3"]
  assert samples.row_names([1], None) == ["1"]


def test_trainer_writes_the_labelled_grid_of_its_generator(tmp_path):
  config = tiny_config()
  names = ["ant", "bee", "cow"]
  trainer = trainer_lib.Trainer(config, str(tmp_path), constant_batches, log=lambda line: None,
                                dataset_info={"name": "x", "num_classes": 3, "class_names": names})
  os.makedirs(os.path.join(str(tmp_path), run_dir.SAMPLE_DIR))  # train() makes it before step 0.
  path = trainer.write_samples()
  assert os.path.dirname(path) == os.path.join(str(tmp_path), run_dir.SAMPLE_DIR)
  grid = np.asarray(PIL.Image.open(path))
  z, labels, columns = trainer.sample_grid.inputs
  assert list(labels[::columns]) == [0, 1, 2]  # One row per class.
  images = trainer.sample_generator(z, labels, training=False).numpy()
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  left = 7 * 3 + 8
  assert grid.shape == (3 * 98 + PAD, left + columns * 98 + PAD, 3)
  for index in (0, columns + 3, len(z) - 1):
    row, column = divmod(index, columns)
    expected = np.repeat(np.repeat(pixels[index], 3, axis=0), 3, axis=1)
    np.testing.assert_array_equal(cell(grid, row, column, 96, left), expected)
  for row in range(3):
    assert (grid[PAD + row * 98:PAD + row * 98 + 96, :left] < 128).any(), row
