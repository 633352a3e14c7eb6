"""Tests of the adversarial losses against values worked out by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import losses

REAL = np.array([0.5, 2.0, -1.0, 1.0], np.float32)
FAKE = np.array([-2.0, 0.5, 0.0, -0.25], np.float32)


def test_discriminator_hinge_loss_by_hand():
  total, real, fake = losses.discriminator_hinge_loss(REAL, FAKE)
  # relu(1 - REAL) = [0.5, 0, 2, 0]; relu(1 + FAKE) = [0, 1.5, 1, 0.75].
  np.testing.assert_allclose(real, 2.5 / 4, rtol=1e-6)
  np.testing.assert_allclose(fake, 3.25 / 4, rtol=1e-6)
  np.testing.assert_allclose(total, 5.75 / 4, rtol=1e-6)


def test_generator_hinge_loss_by_hand():
  np.testing.assert_allclose(losses.generator_hinge_loss(FAKE), 1.75 / 4, rtol=1e-6)


def softplus(x):
  return math.log1p(math.exp(x))


def test_non_saturating_losses_by_hand():
  total, real, fake = losses.discriminator_non_saturating_loss(REAL, FAKE)
  # -log(sigmoid(d)) = softplus(-d) and -log(1 - sigmoid(d)) = softplus(d).
  expected_real = sum(softplus(-float(d)) for d in REAL) / 4
  expected_fake = sum(softplus(float(d)) for d in FAKE) / 4
  np.testing.assert_allclose(real, expected_real, rtol=1e-6)
  np.testing.assert_allclose(fake, expected_fake, rtol=1e-6)
  np.testing.assert_allclose(total, expected_real + expected_fake, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_non_saturating_loss(FAKE),
                             sum(softplus(-float(d)) for d in FAKE) / 4, rtol=1e-6)
  # At a logit of 0 every term is log 2.
  zeros = np.zeros(3, np.float32)
  np.testing.assert_allclose(losses.discriminator_non_saturating_loss(zeros, zeros)[0],
                             2 * math.log(2), rtol=1e-6)


def test_non_saturating_losses_are_stable_for_large_logits():
  large = np.array([100.0, -100.0], np.float32)
  total, real, fake = losses.discriminator_non_saturating_loss(large, large)
  # softplus(-100) ~ 3.7e-44 and softplus(100) = 100 exactly in float32.
  np.testing.assert_allclose(real, 50.0, rtol=1e-6)
  np.testing.assert_allclose(fake, 50.0, rtol=1e-6)
  assert np.isfinite(total)
  np.testing.assert_allclose(losses.generator_non_saturating_loss(large), 50.0, rtol=1e-6)


def test_hinge_gradients_vanish_beyond_the_margin():
  logits = tf.Variable([2.0, 0.5, -3.0])
  with tf.GradientTape() as tape:
    total, _, _ = losses.discriminator_hinge_loss(logits, -logits)
  # d/dx mean(relu(1 - x)) + mean(relu(1 - x)) is -2/3 inside the margin (x < 1), else 0.
  np.testing.assert_allclose(tape.gradient(total, logits), [0.0, -2.0 / 3, -2.0 / 3], rtol=1e-6)


def test_get_losses_maps_names_and_rejects_unknown():
  assert losses.get_losses("hinge") == (losses.discriminator_hinge_loss, losses.generator_hinge_loss)
  assert losses.get_losses("non_saturating") == (losses.discriminator_non_saturating_loss,
                                                  losses.generator_non_saturating_loss)
  with pytest.raises(ValueError, match="wasserstein"):
    losses.get_losses("wasserstein")
