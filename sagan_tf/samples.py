"""Sample sheets as PNG: grids, labelled rows, attention heat maps, written atomically."""

import numpy as np
import PIL.Image
import PIL.ImageDraw
import tensorflow as tf


def to_uint8(images):
  """[-1, 1] floats -> uint8 in [0, 255], rounding as the exported generator does."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images, columns, padding=2):
  """Tiles NHWC uint8 images row by row into one HWC image with white padding."""
  images = np.asarray(images, np.uint8)
  count, height, width, channels = images.shape
  rows = max(1, -(-count // columns))
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


def upscale(images, factor):
  """Nearest-neighbour enlargement of uint8 [N, H, W, C] images by an integer factor."""
  if factor <= 1:
    return images
  return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def label_width(names):
  """Width in pixels of the name margin `label_rows` adds."""
  return min(140, 7 * max(len(name) for name in names) + 8)


def label_rows(grid, names, row_height, padding=2):
  """Adds a white margin left of a grid from `image_grid` with one name per row."""
  width = label_width(names)
  canvas = PIL.Image.new("RGB", (grid.shape[1] + width, grid.shape[0]), (255, 255, 255))
  canvas.paste(PIL.Image.fromarray(grid), (width, 0))
  draw = PIL.ImageDraw.Draw(canvas)
  for row, name in enumerate(names):
    top = padding + row * (row_height + padding) + max(0, row_height // 2 - 6)
    draw.text((4, top), name[:20], fill=(0, 0, 0))
  return np.asarray(canvas)


def row_names(row_labels, class_names=None):
  """The name of each row's class; the label number where `class_names` has none."""
  class_names = list(class_names or [])
  return [str(class_names[label]) if label < len(class_names) else str(label)
          for label in row_labels]


MIN_CELL_PIXELS = 96  # Small images are enlarged to be readable in a viewer.


def cell_scale(image_size, min_pixels=MIN_CELL_PIXELS):
  """The smallest integer factor that makes an image side at least `min_pixels`."""
  return max(1, -(-min_pixels // image_size))


def labelled_grid(images, columns, names=None):
  """The training sample grid: [-1, 1] NHWC images, enlarged, `columns` per row, names at the left.

  Cells are enlarged by nearest neighbour to at least `MIN_CELL_PIXELS`
  (x3 at 32 pixels); `names` (one per row, None for none) go into a white
  margin left of the rows.

  Returns:
    uint8 HWC image.
  """
  images = upscale(to_uint8(images), cell_scale(np.shape(images)[1]))
  grid = image_grid(images, columns)
  return label_rows(grid, names, images.shape[1]) if names else grid


def heat_colors(values):
  """A blue-cyan-yellow-red colour ramp of values in [0, 1]: float [..., 3] in [0, 1]."""
  values = np.clip(values, 0.0, 1.0)[..., None]
  centres = np.array([0.75, 0.5, 0.25])  # Peaks of red, green and blue along the ramp.
  return np.clip(1.5 - np.abs(4.0 * (values - centres)), 0.0, 1.0)


def attention_overlay(image, key_map, alpha=0.55):
  """Blends the heat map of one query's attention over the image.

  The map is stretched to its own [min, max], so the sheet shows where a
  query looks even when its weights are nearly uniform (as early in training).

  Args:
    image: uint8 [S, S, 3].
    key_map: float [r/2, r/2], the attention weights over the pooled keys.
    alpha: weight of the heat map.

  Returns:
    uint8 [S, S, 3].
  """
  size = image.shape[0]
  resized = np.asarray(PIL.Image.fromarray(np.asarray(key_map, np.float32), mode="F").resize(
      (size, size), PIL.Image.BILINEAR))
  resized = (resized - resized.min()) / max(float(resized.max() - resized.min()), 1e-12)
  heat = heat_colors(resized) * 255.0
  return np.clip((1 - alpha) * image.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


def mark_pixel(image, y, x, color=(0, 255, 0), radius=2):
  """Draws a square outline around pixel (y, x) of a uint8 image, in place."""
  size = image.shape[0]
  top, bottom = max(0, y - radius), min(size - 1, y + radius)
  left, right = max(0, x - radius), min(size - 1, x + radius)
  image[top, left:right + 1] = color
  image[bottom, left:right + 1] = color
  image[top:bottom + 1, left] = color
  image[top:bottom + 1, right] = color
  return image
