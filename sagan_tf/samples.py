"""Sample grids as PNG: arranging images in a grid and writing them atomically."""

import numpy as np
import tensorflow as tf


def to_uint8(images):
  """[-1, 1] floats -> uint8 in [0, 255], rounding as the exported generator does."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images, columns, padding=2):
  """Tiles NHWC uint8 images row by row into one HWC image with white padding."""
  images = np.asarray(images)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding,
                  channels), 255, np.uint8)
  for index in range(count):
    row, column = divmod(index, columns)
    top, left = padding + row * (height + padding), padding + column * (width + padding)
    grid[top:top + height, left:left + width] = images[index]
  return grid


def write_png(path, image):
  """Writes an HWC uint8 image as PNG via a temporary file and a rename."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(tf.io.encode_png(np.asarray(image, np.uint8)).numpy())
  tf.io.gfile.rename(tmp, path, overwrite=True)


def class_grid_inputs(num_classes, z_dim, columns=8, max_rows=10, seed=0):
  """Fixed z and labels for a grid with one row per class (rows of class 0 when unconditional).

  Returns:
    (z float32 [rows*columns, z_dim], labels int32 [rows*columns], columns).
  """
  rows = min(num_classes, max_rows) if num_classes else max_rows // 2
  z = np.random.RandomState(seed).standard_normal((rows * columns, z_dim)).astype(np.float32)
  labels = np.repeat(np.arange(rows) if num_classes else np.zeros(rows, np.int64), columns)
  return z, labels.astype(np.int32), columns
