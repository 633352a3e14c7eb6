"""Tests of SpectralNormalization against SVD, NumPy, finite differences and a second TF graph."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.layers import SpectralNormalization

KINDS = ("dense", "conv", "embedding")


def make_layer(kind, rng, **sn_kwargs):
  """A built SN layer of `kind` with a random bias, and an input for it."""
  if kind == "dense":
    inner, x = keras.layers.Dense(6), rng.normal(size=(3, 5))
  elif kind == "conv":
    inner, x = keras.layers.Conv2D(4, 3, padding="same"), rng.normal(size=(2, 8, 8, 3))
  else:
    inner, x = keras.layers.Embedding(7, 5), np.array([0, 3, 6, 3, 1])
  layer = SpectralNormalization(inner, **sn_kwargs)
  layer.build(x.shape)
  if kind != "embedding":
    # A zero bias would hide a bias that is dropped or added twice.
    inner.bias.assign(rng.normal(size=inner.bias.shape))
    x = x.astype(np.float32)
  return layer, x


def np_forward(kind, x, kernel, bias, np_ref):
  """The wrapped layer's operation with a given (normalised) kernel, in float64."""
  if kind == "dense":
    return np.asarray(x, np.float64) @ kernel + bias
  if kind == "conv":
    return np_ref.conv2d_same(x, kernel, bias)
  return kernel[x]


def raw(layer):
  bias = layer.layer.bias.numpy() if getattr(layer.layer, "use_bias", False) else None
  return np.asarray(layer.kernel.numpy(), np.float64), bias


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("schedule", ["1 iteration x 100 calls", "100 iterations x 1 call"])
def test_sigma_converges_to_largest_singular_value(kind, schedule, rng, np_ref):
  if schedule.startswith("1 "):
    layer, x = make_layer(kind, rng, power_iterations=1)
    for _ in range(100):
      layer(x, training=True)
  else:
    layer, x = make_layer(kind, rng, power_iterations=100)
    layer(x, training=True)
  w = np_ref.sn_matrix(layer.kernel.numpy(), embedding=kind == "embedding")
  _, singular_values, vt = np.linalg.svd(w)
  # The convergence rate is (s2/s1)^2 per iteration; a near-degenerate draw would make
  # 100 iterations too few, not the layer wrong.
  assert singular_values[1] / singular_values[0] < 0.9
  np.testing.assert_allclose(layer.sigma.numpy(), singular_values[0], rtol=1e-5)
  # u converges to the top right singular vector of W = [K, C_out] (up to sign).
  u = layer.u.numpy()[0]
  assert layer.u.shape == (1, w.shape[1])
  np.testing.assert_allclose(abs(u @ vt[0]) / np.linalg.norm(u), 1.0, rtol=1e-5)
  normalized, _, _ = layer.normalized_kernel()
  np.testing.assert_allclose(
      np.linalg.svd(np_ref.sn_matrix(normalized.numpy(), kind == "embedding"))[1][0], 1.0, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_forward_and_u_update_match_numpy(kind, rng, np_ref):
  layer, x = make_layer(kind, rng)
  kernel, bias = raw(layer)
  w = np_ref.sn_matrix(kernel, embedding=kind == "embedding")
  u0 = layer.u.numpy().copy()
  u1, _, sigma1 = np_ref.sn_step(w, u0)
  u2, _, sigma2 = np_ref.sn_step(w, u1)
  # From a random u one iteration is far from converged, so a layer that iterated
  # more or less than once would give a measurably different sigma.
  assert abs(sigma1 / np.linalg.svd(w)[1][0] - 1.0) > 1e-3

  expected1 = np_forward(kind, x, kernel / sigma1, bias, np_ref)
  inference = layer(x, training=False)
  np.testing.assert_allclose(inference, expected1, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(layer.u.numpy(), u0)

  training = layer(x, training=True)
  np.testing.assert_allclose(training, expected1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer.u.numpy(), u1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(layer.sigma.numpy(), sigma1, rtol=1e-5)

  # The next inference call iterates once from the stored u'.
  np.testing.assert_allclose(layer(x, training=False),
                             np_forward(kind, x, kernel / sigma2, bias, np_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer.u.numpy(), u1, rtol=1e-5, atol=1e-7)


def np_loss(kind, x, kernel, u, bias, weights, np_ref):
  """sum(weights * y) with y the SN layer's float64 output for a raw kernel."""
  _, _, sigma = np_ref.sn_step(np_ref.sn_matrix(kernel, kind == "embedding"), u)
  return float(np.sum(weights * np_forward(kind, x, kernel / sigma, bias, np_ref)))


def layer_gradient(layer, x, weights, training=False):
  with tf.GradientTape() as tape:
    y = layer(x, training=training)
    loss = tf.reduce_sum(tf.cast(weights, y.dtype) * y)
  return tape.gradient(loss, layer.kernel).numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_autodiff_gradient_matches_finite_differences(kind, rng, np_ref):
  layer, x = make_layer(kind, rng, gradient="autodiff")
  kernel, bias = raw(layer)
  u = layer.u.numpy()
  weights = rng.normal(size=layer(x).shape)
  numeric = np.zeros_like(kernel)
  step = 1e-6  # float64 central differences: truncation and rounding both ~1e-10
  for index in np.ndindex(kernel.shape):
    delta = np.zeros_like(kernel)
    delta[index] = step
    numeric[index] = (np_loss(kind, x, kernel + delta, u, bias, weights, np_ref)
                      - np_loss(kind, x, kernel - delta, u, bias, weights, np_ref)) / (2 * step)
  scale = np.abs(numeric).max()
  for training in (False, True):
    layer.u.assign(u)
    np.testing.assert_allclose(layer_gradient(layer, x, weights, training), numeric,
                               rtol=1e-4, atol=1e-5 * scale)


def make_twins(gradient_a, gradient_b, rng):
  """Two Dense SN layers with the same weights and u but different gradient modes."""
  a, x = make_layer("dense", rng, gradient=gradient_a)
  b = SpectralNormalization(keras.layers.Dense(6), gradient=gradient_b)
  b.build(x.shape)
  b.set_weights(a.get_weights())
  return a, b, x


def test_stop_gradient_treats_u_and_v_as_constants(rng, np_ref):
  stop, autodiff, x = make_twins("stop", "autodiff", rng)
  kernel, _ = raw(stop)
  u1, v, sigma = np_ref.sn_step(kernel, stop.u.numpy())
  weights = rng.normal(size=(3, 6))
  np.testing.assert_allclose(stop(x), autodiff(x), rtol=1e-6, atol=1e-6)

  # With u' and v fixed, d sigma / dW = v^T u' and W_bar = W / sigma, so
  # dL/dW = G / sigma - <G, W> / sigma^2 * v^T u' with G = dL/dW_bar = x^T weights.
  g_bar = np.asarray(x, np.float64).T @ weights
  expected = g_bar / sigma - np.sum(g_bar * kernel) / sigma**2 * (v.T @ u1)
  got_stop = layer_gradient(stop, x, weights, training=True)
  np.testing.assert_allclose(got_stop, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())

  got_autodiff = layer_gradient(autodiff, x, weights, training=True)
  assert np.abs(got_autodiff - got_stop).max() > 1e-2 * np.abs(expected).max()


def aliased_u_gradient(kernel, u, u_new, x, bias, weights, epsilon=1e-12):
  """d loss / dW of the official TF1 graph, written out with its own tape.

  The first product's backward sees the buffer holding u' (fixture README,
  "Reads of u"): v_raw = sg(u W^T) + u' W^T - sg(u' W^T).
  """
  w = tf.constant(kernel, tf.float32)
  u = tf.constant(u, tf.float32)
  u_new = tf.constant(u_new, tf.float32)

  def l2n(t):
    return t / (tf.sqrt(tf.reduce_sum(t * t)) + epsilon)

  with tf.GradientTape() as tape:
    tape.watch(w)
    v_raw = (tf.stop_gradient(tf.matmul(u, w, transpose_b=True)) + tf.matmul(u_new, w, transpose_b=True)
             - tf.stop_gradient(tf.matmul(u_new, w, transpose_b=True)))
    v = l2n(v_raw)
    u_iterated = l2n(tf.matmul(v, w))
    sigma = tf.reduce_sum(tf.matmul(v, w) * u_iterated)
    y = tf.matmul(tf.constant(x, tf.float32), w / sigma) + bias
    loss = tf.reduce_sum(tf.constant(weights, tf.float32) * y)
  return tape.gradient(loss, w).numpy()


def test_official_gradient_uses_updated_u_in_first_product(rng, np_ref):
  official, autodiff, x = make_twins("official", "autodiff", rng)
  kernel, bias = raw(official)
  u0 = official.u.numpy().copy()
  u1, _, _ = np_ref.sn_step(kernel, u0)
  weights = rng.normal(size=(3, 6))
  expected = aliased_u_gradient(kernel, u0, u1, x, bias, weights)
  scale = np.abs(expected).max()

  # The aliasing term is an exact zero in the forward pass: bit-identical outputs.
  np.testing.assert_array_equal(official(x, training=False), autodiff(x, training=False))
  np.testing.assert_array_equal(official(x, training=True), autodiff(x, training=True))
  official.u.assign(u0)
  autodiff.u.assign(u0)
  # Inference writes no u, so there is nothing to alias: plain autodiff.
  np.testing.assert_allclose(layer_gradient(official, x, weights, training=False),
                             layer_gradient(autodiff, x, weights, training=False),
                             rtol=1e-5, atol=1e-6 * scale)

  got_autodiff = layer_gradient(autodiff, x, weights, training=True)
  got_official = layer_gradient(official, x, weights, training=True)
  np.testing.assert_allclose(got_official, expected, rtol=1e-4, atol=1e-5 * scale)
  assert np.abs(got_official - got_autodiff).max() > 1e-3 * scale
  # The same u written as autodiff.
  np.testing.assert_allclose(official.u.numpy(), autodiff.u.numpy(), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(official.u.numpy(), u1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale, divides", [(10.0, True), (0.01, False)])
def test_relaxed_divides_by_max_of_one_and_sigma(scale, divides, rng, np_ref):
  layer, x = make_layer("dense", rng, relaxed=True)
  layer.kernel.assign(layer.kernel.numpy() * scale)
  kernel, bias = raw(layer)
  _, _, sigma = np_ref.sn_step(kernel, layer.u.numpy())
  assert (sigma > 1.0) == divides
  expected = x @ (kernel / max(1.0, sigma)) + bias
  np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer.sigma.numpy(), sigma, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip_gives_identical_outputs(kind, rng):
  layer, x = make_layer(kind, rng, power_iterations=2, gradient="stop", epsilon=1e-10, relaxed=True)
  config = keras.saving.serialize_keras_object(layer)
  clone = keras.saving.deserialize_keras_object(config)
  assert isinstance(clone, SpectralNormalization)
  assert type(clone.layer) is type(layer.layer)
  assert (clone.power_iterations, clone.gradient, clone.epsilon, clone.relaxed) == (2, "stop", 1e-10, True)
  assert clone.layer.get_config() == layer.layer.get_config()
  if not clone.built:  # deserialisation may already rebuild from the saved build config
    clone.build(x.shape)
  clone.set_weights(layer.get_weights())
  np.testing.assert_array_equal(clone(x, training=False), layer(x, training=False))
  np.testing.assert_array_equal(clone(x, training=True), layer(x, training=True))
  np.testing.assert_array_equal(clone.u.numpy(), layer.u.numpy())


def test_inside_tf_function_updates_u_on_each_call(rng, np_ref):
  layer, x = make_layer("conv", rng)
  kernel, bias = raw(layer)
  w = np_ref.sn_matrix(kernel)
  u1, _, sigma1 = np_ref.sn_step(w, layer.u.numpy())
  u2, _, sigma2 = np_ref.sn_step(w, u1)

  @tf.function
  def train_call(inputs):
    return layer(inputs, training=True)

  np.testing.assert_allclose(train_call(x), np_ref.conv2d_same(x, kernel / sigma1, bias),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(train_call(x), np_ref.conv2d_same(x, kernel / sigma2, bias),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer.u.numpy(), u2, rtol=1e-5, atol=1e-7)
  assert train_call.experimental_get_tracing_count() == 1


def test_mirrored_training_call_updates_u_as_on_one_device(mirrored_strategy, per_replica, rng):
  single, x = make_layer("conv", rng)
  x = np.concatenate([x, 3.0 * x[::-1]])  # replicas see different halves
  with mirrored_strategy.scope():
    mirrored = SpectralNormalization(keras.layers.Conv2D(4, 3, padding="same"))
    mirrored.build(x.shape)
  mirrored.set_weights(single.get_weights())

  @tf.function
  def train_call(inputs):
    return mirrored(inputs, training=True)

  outputs = mirrored_strategy.run(train_call, args=per_replica.split(mirrored_strategy, x))
  expected = single(x, training=True).numpy()
  np.testing.assert_allclose(np.concatenate(per_replica.local(mirrored_strategy, outputs)), expected,
                             rtol=1e-5, atol=1e-5)
  for u in per_replica.local(mirrored_strategy, mirrored.u):
    np.testing.assert_allclose(u, single.u.numpy(), rtol=1e-6, atol=1e-7)
  for sigma in per_replica.local(mirrored_strategy, mirrored.sigma):
    np.testing.assert_allclose(sigma, single.sigma.numpy(), rtol=1e-6)


class MixedParent(keras.layers.Layer):
  """Calls a wrapped layer as the blocks and models do: from inside a mixed-precision layer."""

  def __init__(self, inner, **kwargs):
    super().__init__(**kwargs)
    self.inner = inner

  def call(self, inputs, training=False):
    return self.inner(inputs, training=training)


def round_to_bfloat16(x):
  return tf.cast(tf.cast(x, tf.bfloat16), tf.float64).numpy()


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "top_level"])
@pytest.mark.parametrize("kind", KINDS)
def test_mixed_bfloat16_keeps_u_and_sigma_in_float32(kind, nested, rng, np_ref):
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  layer, x = make_layer(kind, rng)
  kernel, bias = raw(layer)
  if not nested:
    # Keras opens an autocast scope for any top-level mixed-precision call (a layer's
    # autocast=False only clears an enclosing one), so the wrapped layer's kernel
    # arrives in bfloat16; u and sigma must still be read and iterated in float32.
    kernel = round_to_bfloat16(kernel)
  u1, _, sigma1 = np_ref.sn_step(np_ref.sn_matrix(kernel, kind == "embedding"), layer.u.numpy())
  outputs = (MixedParent(layer) if nested else layer)(x, training=True)
  assert outputs.dtype == tf.bfloat16
  assert layer.u.dtype == "float32" and layer.sigma.dtype == "float32"
  assert layer.kernel.dtype == "float32"
  np.testing.assert_allclose(layer.u.numpy(), u1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(layer.sigma.numpy(), sigma1, rtol=1e-5)
  expected = np_forward(kind, x, kernel / sigma1, bias, np_ref)
  np.testing.assert_allclose(tf.cast(outputs, tf.float32), expected, rtol=3e-2,
                             atol=3e-2 * np.abs(expected).max())


@pytest.mark.parametrize("kwargs, argument", [
    ({"power_iterations": 0}, "power_iterations"),
    ({"gradient": "exact"}, "gradient"),
    ({"epsilon": -1.0}, "epsilon"),
])
def test_invalid_arguments_raise_value_error_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    SpectralNormalization(keras.layers.Dense(2), **kwargs)


def test_unsupported_wrapped_layer_raises_value_error():
  with pytest.raises(ValueError, match="layer="):
    SpectralNormalization(keras.layers.Conv1D(2, 3))
