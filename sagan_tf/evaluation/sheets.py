"""The PNG sheets of an evaluation: samples, one row per class, interpolations, attention maps."""

import math
import os

import numpy as np

from sagan_tf import samples
from sagan_tf.evaluation.sampling import balanced_labels
from sagan_tf.evaluation.sampling import sample_noise

SHEET_FILES = {"samples": "samples.png", "classes": "classes.png",
               "interpolation": "interpolation.png", "attention": "attention.png"}


def default_attention_pixels(image_size):
  """Three query pixels (y, x): upper left, centre and lower middle."""
  quarter = image_size // 4
  return [(quarter, quarter), (image_size // 2, image_size // 2), (3 * quarter, image_size // 2)]


def attention_sheet(sampler, z, labels, pixels, scale=1):
  """One row per sample: the image with the query pixels marked, then one heat map per query.

  `pixels` are (y, x) in image pixels; each maps to the attention layer's
  grid at resolution r as (y * r // S, x * r // S).
  """
  images, attention = sampler.generate_with_attention(z, labels)
  size = sampler.image_size
  resolution = int(round(math.sqrt(attention.shape[1])))
  keys = int(round(math.sqrt(attention.shape[2])))
  pixels_uint8 = samples.upscale(samples.to_uint8(images), scale)
  radius = max(2, scale)
  tiles = []
  for index in range(len(images)):
    marked = pixels_uint8[index].copy()
    for y, x in pixels:
      samples.mark_pixel(marked, y * scale, x * scale, radius=radius)
    tiles.append(marked)
    for y, x in pixels:
      query = (y * resolution // size) * resolution + (x * resolution // size)
      overlay = samples.attention_overlay(pixels_uint8[index],
                                          attention[index, query].reshape(keys, keys))
      tiles.append(samples.mark_pixel(overlay, y * scale, x * scale, radius=radius))
  return samples.image_grid(np.stack(tiles), columns=1 + len(pixels))


def _interpolation_inputs(rng, num_classes, z_dim, truncation, rows, columns):
  """z along the line between two noise vectors per row, and one random class per row."""
  ends = sample_noise(rng, 2 * rows, z_dim, truncation).reshape(rows, 2, z_dim)
  weights = np.linspace(0.0, 1.0, columns, dtype=np.float32)[None, :, None]
  z = (ends[:, :1] * (1.0 - weights) + ends[:, 1:] * weights).reshape(-1, z_dim)
  row_labels = rng.integers(0, num_classes, rows) if num_classes else np.zeros(rows)
  return z, np.repeat(row_labels.astype(np.int32), columns)


def write_sheets(sampler, output_dir, *, seed=0, truncation=0.0, class_names=None,
                 attention_pixels=None, columns=10, max_classes=20):
  """Writes the PNG sheets and returns {name: path}.

  samples.png: an 8x8 grid of random samples (balanced classes).
  classes.png: one row per class (the first `max_classes`), `columns` samples each.
  interpolation.png: 4 rows of `columns` images along the line between two z,
    one class per row.
  attention.png: see `attention_sheet`; skipped when `attention_pixels` is
    an empty list or the sampler has no attention endpoint.
  Small images are enlarged (nearest neighbour) to at least 64 pixels.
  """
  rng = np.random.default_rng(seed + 7919)  # Independent of the metric samples.
  size, z_dim, num_classes = sampler.image_size, sampler.z_dim, sampler.num_classes
  scale = max(1, 64 // size)
  paths = {}

  def write(name, image):
    paths[name] = os.path.join(output_dir, SHEET_FILES[name])
    samples.write_png(paths[name], image)

  def grid(z, labels, grid_columns):
    images = samples.upscale(samples.to_uint8(sampler.generate(z, labels)), scale)
    return samples.image_grid(images, grid_columns)

  z = sample_noise(rng, 64, z_dim, truncation)
  write("samples", grid(z, balanced_labels(rng, 64, num_classes), 8))
  if num_classes:
    shown = min(num_classes, max_classes)
    z = sample_noise(rng, shown * columns, z_dim, truncation)
    labels = np.repeat(np.arange(shown, dtype=np.int32), columns)
    names = [str(n) for n in (class_names or [])[:shown]] or [str(i) for i in range(shown)]
    write("classes", samples.label_rows(grid(z, labels, columns), names, size * scale))
  write("interpolation", grid(*_interpolation_inputs(rng, num_classes, z_dim, truncation, 4,
                                                     columns), columns))
  if attention_pixels is None:
    attention_pixels = default_attention_pixels(size)
  if attention_pixels and sampler.has_attention:
    z = sample_noise(rng, 4, z_dim, truncation)
    labels = balanced_labels(rng, 4, num_classes)
    write("attention", attention_sheet(sampler, z, labels, attention_pixels, scale))
  return paths
