"""Tests of DiffAugment: each transform by hand on tiny images, the draws' ranges and determinism,
gradients to G, XLA. TrainStep with augmentation on two replicas against one device is in
step_test (test_mirrored_step_equals_one_device_step)."""

import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.models import build_sagan
from sagan_tf.training import diffaugment
from sagan_tf.training import run_dir

POLICY = "color,translation,cutout"
SEED = tf.constant([3, 11], tf.int64)


def images(rng, batch=2, size=4):
  return rng.uniform(-1.0, 1.0, (batch, size, size, 3)).astype(np.float32)


def test_brightness_adds_a_constant_per_image(rng):
  x = images(rng)
  out = diffaugment.brightness(x, tf.constant([0.3, -0.2])).numpy()
  np.testing.assert_allclose(out - x, np.array([0.3, -0.2])[:, None, None, None] + 0 * x, atol=1e-6)


def test_saturation_mixes_with_the_per_pixel_channel_mean(rng):
  x = images(rng)
  magnitude = np.array([0.0, 1.7], np.float32)
  mean = x.mean(axis=3, keepdims=True)
  expected = (x - mean) * magnitude[:, None, None, None] + mean
  np.testing.assert_allclose(diffaugment.saturation(x, magnitude), expected, atol=1e-6)
  # Magnitude 0 makes every pixel grey: its three channels equal.
  out = diffaugment.saturation(x, magnitude).numpy()
  np.testing.assert_allclose(out[0], np.repeat(out[0, ..., :1], 3, axis=-1), atol=1e-6)


def test_contrast_mixes_with_the_per_image_mean(rng):
  x = images(rng)
  magnitude = np.array([0.5, 1.4], np.float32)
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  expected = (x - mean) * magnitude[:, None, None, None] + mean
  np.testing.assert_allclose(diffaugment.contrast(x, magnitude), expected, atol=1e-6)


def reference_translation(x, shift_h, shift_w):
  """The reference's pad-by-one-and-clamp gather, looped in NumPy: out[i, j] = x[i + sh, j + sw]."""
  out = np.zeros_like(x)
  size_h, size_w = x.shape[1:3]
  for b in range(x.shape[0]):
    for i in range(size_h):
      for j in range(size_w):
        source_i, source_j = i + shift_h[b], j + shift_w[b]
        if 0 <= source_i < size_h and 0 <= source_j < size_w:
          out[b, i, j] = x[b, source_i, source_j]
  return out


def test_translation_shifts_with_zero_fill_as_the_reference(rng):
  x = images(rng, batch=3)
  out = diffaugment.translate(x, tf.constant([1, 0, -1]), tf.constant([0, -1, 1])).numpy()
  # Image 0 by (1, 0): row i takes row i + 1, the last row is zero.
  np.testing.assert_array_equal(out[0, :-1], x[0, 1:])
  np.testing.assert_array_equal(out[0, -1], 0.0)
  np.testing.assert_array_equal(out, reference_translation(x, [1, 0, -1], [0, -1, 1]))


def test_cutout_zeros_the_expected_square(rng):
  x = images(rng, size=8) + 5.0  # No zeros before the cut.
  out = diffaugment.cutout(x, tf.constant([2, 0]), tf.constant([5, 8])).numpy()
  expected = x.copy()
  expected[0, 0:4, 3:7] = 0.0  # Side 8 * 0.5 = 4, rows from 2 - 2, columns from 5 - 2.
  expected[1, 0:2, 6:8] = 0.0  # Clipped at the edges: rows [-2, 2), columns [6, 10).
  np.testing.assert_array_equal(out, expected)


def test_draws_stay_in_the_reference_ranges_and_vary():
  x = np.arange(16 * 8 * 8 * 3, dtype=np.float32).reshape(16, 8, 8, 3) + 1.0
  out = diffaugment.augment(x, "translation", SEED).numpy()
  # Shifts are in [-1, 1] (8 * 0.125 + 0.5 -> 1): each image is one of the nine translations.
  shifts = [(h, w) for h in (-1, 0, 1) for w in (-1, 0, 1)]
  found = []
  for b in range(16):
    matches = [s for s in shifts if np.array_equal(out[b], reference_translation(x[b:b + 1], *zip(s))[0])]
    assert len(matches) == 1, b
    found += matches
  assert len(set(found)) >= 4
  cut = diffaugment.augment(x, "cutout", SEED).numpy()
  zero_counts = (cut == 0).all(axis=-1).sum(axis=(1, 2))
  # A 4x4 square whose centre is in [0, 9) cuts 4 to 16 pixels.
  assert zero_counts.min() >= 4 and zero_counts.max() <= 16 and len(set(zero_counts)) > 1
  colour = diffaugment.augment(np.zeros((16, 2, 2, 3), np.float32), "color", SEED).numpy()
  # On black images only the brightness shift survives (mean 0 before saturation and contrast).
  assert np.all(np.abs(colour) <= 0.5) and np.std(colour[:, 0, 0, 0]) > 0.1


def test_draws_depend_on_the_seed_only_and_slice_the_global_batch(rng):
  x = images(rng, batch=4, size=8)
  whole = diffaugment.augment(x, POLICY, SEED).numpy()
  np.testing.assert_array_equal(diffaugment.augment(x, POLICY, SEED), whole)
  assert not np.array_equal(diffaugment.augment(x, POLICY, SEED + 1), whole)
  # A replica holding rows 2-3 of a global batch of 4 gets those rows' draws.
  np.testing.assert_array_equal(diffaugment.augment(x[2:], POLICY, SEED, offset=2, total=4), whole[2:])
  np.testing.assert_array_equal(diffaugment.augment(x, "", SEED), x)


def test_augment_compiles_with_xla_deterministically_and_slices_alike(rng):
  # XLA's Philox maps (seed, counter) to other numbers than the TF kernel does,
  # so jit_compile draws other (equally distributed) values than eager; within
  # one mode the draws are a function of the seed, as resuming needs. The
  # offset is a tensor, as a replica's is inside the compiled train step
  # (replica id x batch), and D's gradient flows back through the augmentation
  # there, so the gradient is compiled too. (The XLA train step itself, without
  # augmentation, is step_test's test_xla_replica_function_equals_the_plain_one.)
  x = images(rng, batch=4, size=8)
  weights = tf.constant(rng.normal(size=x.shape), tf.float32)

  def augment_and_gradient(x, seed, offset, total):
    with tf.GradientTape() as tape:
      tape.watch(x)
      augmented = diffaugment.augment(x, POLICY, seed, offset=offset, total=total)
      loss = tf.reduce_sum(augmented * weights[offset:offset + tf.shape(x)[0]])
    return augmented, tape.gradient(loss, x)

  compiled = tf.function(augment_and_gradient, jit_compile=True)
  whole, gradient = (t.numpy() for t in compiled(tf.constant(x), SEED, tf.constant(0), 4))
  again = compiled(tf.constant(x), SEED, tf.constant(0), 4)
  np.testing.assert_array_equal(again[0], whole)
  np.testing.assert_array_equal(again[1], gradient)
  part = compiled(tf.constant(x[2:]), SEED, tf.constant(2), 4)
  np.testing.assert_array_equal(part[0], whole[2:])
  np.testing.assert_array_equal(part[1], gradient[2:])
  assert not np.array_equal(whole, x) and np.all(np.isfinite(whole))
  # Without augmentation the gradient would be the weights themselves.
  assert np.all(np.isfinite(gradient)) and np.abs(gradient - weights.numpy()).max() > 0.1


def hand_augment(x, draws):
  """The policy written independently: colour by formula, translation and cutout as products."""
  b, h, w = draws
  x = x + b.brightness[:, None, None, None]
  mean = tf.reduce_mean(x, axis=3, keepdims=True)
  x = (x - mean) * b.saturation[:, None, None, None] + mean
  mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
  x = (x - mean) * b.contrast[:, None, None, None] + mean
  # Shift matrices: out[i] = sum_k S[i, k] x[k] with S[i, i + s] = 1.
  rows = np.stack([np.eye(h, k=s) for s in b.shift_h]).astype(np.float32)
  columns = np.stack([np.eye(w, k=s) for s in b.shift_w]).astype(np.float32)
  x = tf.einsum("bik,bkwc->biwc", rows, x)
  x = tf.einsum("bjk,bikc->bijc", columns, x)
  mask = np.ones((len(b.center_h), h, w, 1), np.float32)
  for i, (ch, cw) in enumerate(zip(b.center_h, b.center_w)):
    mask[i, max(ch - h // 4, 0):ch - h // 4 + h // 2, max(cw - w // 4, 0):cw - w // 4 + w // 2] = 0.0
  return x * mask


def library_augment(x, b):
  x = diffaugment.contrast(diffaugment.saturation(diffaugment.brightness(x, b.brightness),
                                                  b.saturation), b.contrast)
  x = diffaugment.translate(x, b.shift_h, b.shift_w)
  return diffaugment.cutout(x, b.center_h, b.center_w)


def test_gradients_reach_g_and_equal_those_of_a_hand_version():
  generator, discriminator = build_sagan(32, 3, width=8, z_dim=16)
  z = tf.constant(np.random.default_rng(1).normal(size=(2, 16)), tf.float32)
  labels = tf.constant([0, 2])
  fixed = types.SimpleNamespace(brightness=np.float32([0.2, -0.4]), saturation=np.float32([0.3, 1.8]),
                                contrast=np.float32([0.6, 1.3]), shift_h=[2, -3], shift_w=[-1, 4],
                                center_h=[5, 30], center_w=[0, 17])

  def gradient(augment):
    with tf.GradientTape() as tape:
      tape.watch(z)
      loss = tf.reduce_sum(discriminator(augment(generator(z, labels)), labels))
    return tape.gradient(loss, z).numpy()

  expected = gradient(lambda x: hand_augment(x, (fixed, 32, 32)))
  np.testing.assert_allclose(gradient(lambda x: library_augment(x, fixed)), expected,
                             rtol=1e-4, atol=1e-6)
  assert np.abs(expected).min() > 0
  assert np.abs(gradient(lambda x: diffaugment.augment(x, POLICY, SEED))).min() > 0


def test_policy_is_validated_and_adopted_on_resume():
  assert configs.TrainConfig(diffaugment="cutout,color").diffaugment == "cutout,color"
  for bad in ("colour", "color,", "color, cutout"):
    with pytest.raises(ValueError, match=r"^train\.diffaugment must be empty or a comma list of "
                       r"\('color', 'translation', 'cutout'\), got .*unknown"):
      configs.apply_overrides(configs.ExperimentConfig(), [f"train.diffaugment={bad}"])
  saved = configs.ExperimentConfig()
  config = dataclasses.replace(saved, train=dataclasses.replace(saved.train, diffaugment=POLICY))
  assert run_dir.resume_changes(saved, config) == ([], [f"train.diffaugment: saved '', now {POLICY!r}"])
