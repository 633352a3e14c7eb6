"""Tests of ConditionalBatchNormalization against NumPy batch norm and the EMA closed form."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.layers import ConditionalBatchNormalization

SHAPE = (4, 8, 8, 6)
NUM_CLASSES = 3
LABELS = np.array([0, 2, 1, 2])


def make_layer(rng, num_classes=NUM_CLASSES, **kwargs):
  """A built layer with random tables and moving statistics (none at their initial values)."""
  layer = ConditionalBatchNormalization(num_classes, **kwargs)
  layer.build(SHAPE)
  layer.gamma.assign(1.0 + 0.5 * rng.normal(size=layer.gamma.shape))
  layer.beta.assign(rng.normal(size=layer.beta.shape))
  layer.moving_mean.assign(rng.normal(size=SHAPE[-1]))
  layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=SHAPE[-1]))
  return layer


def batch(rng, shift=0.0, scale=1.0):
  return (shift + scale * rng.normal(size=SHAPE) + rng.normal(size=SHAPE[-1])).astype(np.float32)


def tables(layer, labels):
  gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
  if layer.num_classes:
    return gamma[labels][:, None, None, :], beta[labels][:, None, None, :]
  return gamma, beta


def test_training_output_is_per_class_batch_norm(rng, np_ref):
  layer = make_layer(rng, epsilon=1e-3)
  x = batch(rng, shift=2.0, scale=3.0)
  gamma, beta = tables(layer, LABELS)
  x64 = np.asarray(x, np.float64)
  # Biased variance over batch, height and width.
  expected = np_ref.batch_norm(x64, x64.mean((0, 1, 2)), x64.var((0, 1, 2)), gamma, beta, 1e-3)
  np.testing.assert_allclose(layer(x, LABELS, training=True), expected, rtol=1e-5, atol=1e-5)


def test_moving_statistics_follow_the_ema_closed_form(rng):
  decay = 0.9
  layer = make_layer(rng, momentum=decay)
  m0, v0 = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()
  batches = [batch(rng, shift=i, scale=1.0 + i) for i in range(3)]
  for x in batches:
    layer(x, LABELS, training=True)
  k = len(batches)
  means = [np.asarray(x, np.float64).mean((0, 1, 2)) for x in batches]
  variances = [np.asarray(x, np.float64).var((0, 1, 2)) for x in batches]
  # m_k = d^k m_0 + (1 - d) sum_i d^(k-1-i) mean_i, with no zero-debiasing.
  expected_mean = decay**k * m0 + (1 - decay) * sum(decay**(k - 1 - i) * m for i, m in enumerate(means))
  expected_var = decay**k * v0 + (1 - decay) * sum(
      decay**(k - 1 - i) * v for i, v in enumerate(variances))
  np.testing.assert_allclose(layer.moving_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(layer.moving_variance.numpy(), expected_var, rtol=1e-5, atol=1e-6)


def test_inference_uses_moving_statistics_and_updates_nothing(rng, np_ref):
  layer = make_layer(rng)
  mean, variance = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()
  x = batch(rng, shift=5.0)
  gamma, beta = tables(layer, LABELS)
  expected = np_ref.batch_norm(np.asarray(x, np.float64), mean, variance, gamma, beta, 1e-5)
  np.testing.assert_allclose(layer(x, LABELS, training=False), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
  np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)


def test_num_classes_zero_is_plain_batch_norm(rng, np_ref):
  layer = make_layer(rng, num_classes=0)
  assert layer.gamma.shape == (SHAPE[-1],) and layer.beta.shape == (SHAPE[-1],)
  x = batch(rng, shift=-1.0, scale=2.0)
  x64 = np.asarray(x, np.float64)
  expected = np_ref.batch_norm(x64, x64.mean((0, 1, 2)), x64.var((0, 1, 2)), layer.gamma.numpy(),
                               layer.beta.numpy(), 1e-5)
  np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-5, atol=1e-5)
  # Labels are ignored when unconditional.
  np.testing.assert_array_equal(layer(x, LABELS, training=False), layer(x, training=False))


def test_labels_select_table_rows(rng):
  layer = make_layer(rng)
  x = batch(rng)
  same = layer(np.stack([x[0]] * 2), np.array([1, 1]), training=False)
  different = layer(np.stack([x[0]] * 2), np.array([1, 2]), training=False)
  np.testing.assert_array_equal(same[0], same[1])
  assert np.abs(different[0] - different[1]).max() > 1e-2


def test_bessel_moving_variance_uses_unbiased_batch_variance(rng):
  decay = 0.5
  plain = make_layer(rng, num_classes=0, momentum=decay)
  bessel = make_layer(rng, num_classes=0, momentum=decay, bessel_moving_variance=True)
  bessel.set_weights(plain.get_weights())
  v0 = plain.moving_variance.numpy().copy()
  x = batch(rng, scale=2.0)
  n = SHAPE[0] * SHAPE[1] * SHAPE[2]
  variance = np.asarray(x, np.float64).var((0, 1, 2))
  np.testing.assert_allclose(bessel(x, training=True), plain(x, training=True), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(bessel.moving_variance.numpy(),
                             decay * v0 + (1 - decay) * variance * n / (n - 1), rtol=1e-5)
  np.testing.assert_allclose(plain.moving_variance.numpy(), decay * v0 + (1 - decay) * variance,
                             rtol=1e-5)
  np.testing.assert_allclose(bessel.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-6)


def run_on_two_replicas(strategy, per_replica, layer_kwargs, weights, x, labels):
  """Global-batch training call split over two replicas: (outputs, moving mean, moving variance)."""
  with strategy.scope():
    layer = ConditionalBatchNormalization(NUM_CLASSES, **layer_kwargs)
    layer.build(x.shape)
  layer.set_weights(weights)

  @tf.function
  def train_call(inputs, targets):
    return layer(inputs, targets, training=True)

  outputs = strategy.run(train_call, args=per_replica.split(strategy, x, labels))
  means = per_replica.local(strategy, layer.moving_mean)
  variances = per_replica.local(strategy, layer.moving_variance)
  # Mirrored copies must agree, else replicas would drift apart.
  np.testing.assert_array_equal(means[0], means[1])
  np.testing.assert_array_equal(variances[0], variances[1])
  return np.concatenate(per_replica.local(strategy, outputs)), means[0], variances[0]


def test_synchronized_on_two_replicas_equals_one_device(mirrored_strategy, per_replica, rng):
  single = make_layer(rng, momentum=0.5)
  weights = single.get_weights()
  # The two halves have different statistics, so per-replica moments would differ.
  x = np.concatenate([batch(rng), batch(rng, shift=3.0, scale=4.0)])
  labels = np.array([0, 2, 1, 2, 1, 0, 0, 2])
  expected = single(x, labels, training=True).numpy()
  expected_mean, expected_var = single.moving_mean.numpy(), single.moving_variance.numpy()

  outputs, mean, variance = run_on_two_replicas(
      mirrored_strategy, per_replica, {"momentum": 0.5, "synchronized": True}, weights, x, labels)
  np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(variance, expected_var, rtol=1e-5, atol=1e-5)

  outputs, _, variance = run_on_two_replicas(
      mirrored_strategy, per_replica, {"momentum": 0.5, "synchronized": False}, weights, x, labels)
  assert np.abs(outputs - expected).max() > 1e-1
  assert np.abs(variance - expected_var).max() > 1e-1


def test_mixed_bfloat16_keeps_statistics_float32(rng, np_ref):
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  layer = make_layer(rng, momentum=0.999)
  m0 = layer.moving_mean.numpy().copy()
  x = batch(rng, shift=2.0)
  outputs = layer(x, LABELS, training=True)
  assert outputs.dtype == tf.bfloat16
  assert all(v.dtype == "float32" for v in layer.variables)
  # A decay of 0.999 rounds to 1 in bfloat16: the update must run in float32 to move at all.
  expected_mean = 0.999 * m0 + 0.001 * np.asarray(x, np.float64).mean((0, 1, 2))
  np.testing.assert_allclose(layer.moving_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
  gamma, beta = tables(layer, LABELS)
  x64 = np.asarray(x, np.float64)
  expected = np_ref.batch_norm(x64, x64.mean((0, 1, 2)), x64.var((0, 1, 2)), gamma, beta, 1e-5)
  np.testing.assert_allclose(tf.cast(outputs, tf.float32), expected, rtol=2e-2, atol=5e-2)


def test_config_round_trip(rng):
  layer = make_layer(rng, momentum=0.9, epsilon=1e-3, synchronized=True, bessel_moving_variance=True)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert (clone.num_classes, clone.momentum, clone.epsilon, clone.synchronized,
          clone.bessel_moving_variance) == (NUM_CLASSES, 0.9, 1e-3, True, True)
  if not clone.built:
    clone.build(SHAPE)
  clone.set_weights(layer.get_weights())
  x = batch(rng)
  np.testing.assert_array_equal(clone(x, LABELS, training=True), layer(x, LABELS, training=True))


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_classes": -1}, "num_classes"),
    ({"momentum": 1.0}, "momentum"),
    ({"epsilon": 0.0}, "epsilon"),
])
def test_invalid_arguments_raise_value_error_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    ConditionalBatchNormalization(**kwargs)


def test_conditional_layer_without_labels_raises(rng):
  layer = make_layer(rng)
  with pytest.raises(ValueError, match="labels"):
    layer(batch(rng), training=False)
