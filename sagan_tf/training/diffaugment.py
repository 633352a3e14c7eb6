"""DiffAugment: differentiable colour, translation and cutout of every image the discriminator sees.

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020 (reference code: mit-han-lab/data-efficient-gans,
DiffAugment_tf.py). The same transforms with the same ranges, written with
static shapes for XLA and with stateless random draws, so that a step's
augmentation is a function of (seed, step, call) only: a resumed run draws
what a straight run draws.

Each transform is split into its random draw and a deterministic function
of the draw (`brightness`, `saturation`, `contrast`, `translate`, `cutout`)
that the tests check by hand. The draws are made for the whole global batch
and each replica takes its own rows, so a replica's images get draws
different from the other replicas' and the global batch gets the same
draws on any number of replicas. Under XLA (jit_compile) TF's stateless
generator yields other numbers than its CPU kernel: a run is reproducible
and resumable with its own jit setting.
"""

import tensorflow as tf

from sagan_tf.configs.experiment import diffaugment_policy

TRANSLATION_RATIO = 0.125  # Largest shift as a fraction of the image side.
CUTOUT_RATIO = 0.5  # Side of the cut-out square as a fraction of the image side.
# TF's stateless Philox: the same numbers on CPU and GPU; XLA (jit_compile,
# TPU) computes other numbers from the same seed, equally distributed.
_ALG = "philox"


def brightness(x, magnitude):
  """Adds a per-image constant: magnitude (batch,) drawn from [-0.5, 0.5)."""
  return x + tf.reshape(tf.cast(magnitude, x.dtype), (-1, 1, 1, 1))


def saturation(x, magnitude):
  """Scales each pixel's deviation from its channel mean: magnitude (batch,) from [0, 2)."""
  mean = tf.reduce_mean(x, axis=3, keepdims=True)
  return (x - mean) * tf.reshape(tf.cast(magnitude, x.dtype), (-1, 1, 1, 1)) + mean


def contrast(x, magnitude):
  """Scales the deviation from the image's mean: magnitude (batch,) from [0.5, 1.5)."""
  mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
  return (x - mean) * tf.reshape(tf.cast(magnitude, x.dtype), (-1, 1, 1, 1)) + mean


def _shift(x, shift, axis):
  """out[.., i, ..] = x[.., i + shift, ..] along `axis`, zero where i + shift is outside."""
  size = x.shape[axis]
  paddings = [[0, 0]] * 4
  paddings[axis] = [1, 1]
  padded = tf.pad(x, paddings)
  # Row 0 and row size + 1 of `padded` are the zeros every outside index clamps to.
  index = tf.clip_by_value(tf.range(size)[None, :] + shift[:, None] + 1, 0, size + 1)
  return tf.gather(padded, index, axis=axis, batch_dims=1)


def translate(x, shift_h, shift_w):
  """Moves image b by (-shift_h[b], -shift_w[b]) pixels with zero fill, as the reference."""
  return _shift(_shift(x, tf.cast(shift_h, tf.int32), 1), tf.cast(shift_w, tf.int32), 2)


def cutout_size(image_size):
  return int(image_size * CUTOUT_RATIO + 0.5)


def cutout(x, center_h, center_w):
  """Zeros a square of side `cutout_size` whose rows start at center - size // 2 (clipped)."""
  size_h, size_w = cutout_size(x.shape[1]), cutout_size(x.shape[2])

  def inside(length, size, center):
    start = tf.cast(center, tf.int32)[:, None] - size // 2
    positions = tf.range(length)[None, :]
    return (positions >= start) & (positions < start + size)

  rows = inside(x.shape[1], size_h, center_h)
  columns = inside(x.shape[2], size_w, center_w)
  keep = tf.logical_not(rows[:, :, None] & columns[:, None, :])
  return x * tf.cast(keep, x.dtype)[..., None]


def _uniform(seed, total, offset, batch, low, high, dtype=tf.float32):
  """`batch` rows from `offset` of `total` stateless draws from [low, high)."""
  values = tf.random.stateless_uniform((total,), seed, minval=low, maxval=high, dtype=dtype, alg=_ALG)
  return values[offset:offset + batch]


def _apply(name, x, seed, total, offset):
  """One policy entry with its draws; `seed` is this entry's."""
  batch = tf.shape(x)[0]

  def draw(index, low, high, dtype=tf.float32):
    return _uniform(tf.random.experimental.stateless_fold_in(seed, index), total, offset, batch,
                    low, high, dtype)

  if name == "color":
    x = brightness(x, draw(0, -0.5, 0.5))
    x = saturation(x, draw(1, 0.0, 2.0))
    return contrast(x, draw(2, 0.5, 1.5))
  if name == "translation":
    shift_h = int(x.shape[1] * TRANSLATION_RATIO + 0.5)
    shift_w = int(x.shape[2] * TRANSLATION_RATIO + 0.5)
    return translate(x, draw(0, -shift_h, shift_h + 1, tf.int32),
                     draw(1, -shift_w, shift_w + 1, tf.int32))
  # "cutout": the reference's centre range, [0, size + 1 - cutout % 2).
  high_h = x.shape[1] + 1 - cutout_size(x.shape[1]) % 2
  high_w = x.shape[2] + 1 - cutout_size(x.shape[2]) % 2
  return cutout(x, draw(0, 0, high_h, tf.int32), draw(1, 0, high_w, tf.int32))


def augment(images, policy, seed, offset=0, total=None):
  """Applies a DiffAugment policy to NHWC `images`; differentiable in `images`.

  Args:
    images: (batch, height, width, channels) with static height and width.
    policy: a `train.diffaugment` string ("" returns `images`).
    seed: int32/int64 shape-[2] stateless seed; equal seeds, equal draws.
    offset: index of `images`' first row in the global batch.
    total: rows of the global batch (None: `images` is the whole batch).

  Returns:
    The augmented images, same shape and dtype.
  """
  names = diffaugment_policy(policy)
  total = tf.shape(images)[0] if total is None else total
  for index, name in enumerate(names):
    images = _apply(name, images, tf.random.experimental.stateless_fold_in(seed, index), total, offset)
  return images
