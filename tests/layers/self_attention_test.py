"""Tests of SelfAttention against a NumPy einsum implementation of the official block."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.layers import SelfAttention, SpectralNormalization

SHAPE = (2, 8, 8, 16)  # C/8 = 2 query/key channels, C/2 = 8 value channels


def make_layer(rng, **kwargs):
  layer = SelfAttention(**kwargs)
  layer.build(SHAPE)
  return layer, rng.normal(size=SHAPE).astype(np.float32)


def np_attention(layer, x, gamma, np_ref):
  """(output, attention map) of the official `sn_non_local_block_sim`, from raw kernels and u."""
  batch, height, width, channels = x.shape
  positions = height * width

  def conv1x1(sn_layer, inputs):
    kernel, _, _ = np_ref.sn_kernel(sn_layer)
    return np.einsum("bhwc,cd->bhwd", inputs, kernel[0, 0])

  x = np.asarray(x, np.float64)
  theta = conv1x1(layer.theta, x).reshape(batch, positions, channels // 8)
  phi = np_ref.max_pool2(conv1x1(layer.phi, x)).reshape(batch, positions // 4, channels // 8)
  g = np_ref.max_pool2(conv1x1(layer.g, x)).reshape(batch, positions // 4, channels // 2)
  attention = np_ref.softmax(np.einsum("bnc,bmc->bnm", theta, phi), axis=-1)
  attended = np.einsum("bnm,bmc->bnc", attention, g).reshape(batch, height, width, channels // 2)
  return x + gamma * conv1x1(layer.attn, attended), attention


@pytest.mark.parametrize("training", [False, True])
def test_output_matches_numpy_einsum(training, rng, np_ref):
  layer, x = make_layer(rng)
  layer.gamma.assign(0.7)
  expected, expected_attention = np_attention(layer, x, 0.7, np_ref)
  outputs, attention = layer(x, training=training, return_attention=True)
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(attention, expected_attention, rtol=1e-5, atol=1e-6)
  # The attention term is not negligible, so a wrong o would show above.
  assert np.abs(expected - x).max() > 1e-1


def test_uses_each_spectral_norms_normalized_kernel(rng):
  layer, x = make_layer(rng)
  layer.gamma.assign(-1.3)
  positions = SHAPE[1] * SHAPE[2]
  kernels = {name: getattr(layer, name).normalized_kernel()[0].numpy()[0, 0]
             for name in ("theta", "phi", "g", "attn")}
  theta = np.einsum("bhwc,cd->bhwd", x, kernels["theta"]).reshape(2, positions, 2)
  phi = np.einsum("bhwc,cd->bhwd", x, kernels["phi"])
  phi = phi.reshape(2, 4, 2, 4, 2, 2).max(axis=(2, 4)).reshape(2, positions // 4, 2)
  g = np.einsum("bhwc,cd->bhwd", x, kernels["g"])
  g = g.reshape(2, 4, 2, 4, 2, 8).max(axis=(2, 4)).reshape(2, positions // 4, 8)
  logits = np.einsum("bnc,bmc->bnm", theta, phi)
  attention = np.exp(logits - logits.max(-1, keepdims=True))
  attention /= attention.sum(-1, keepdims=True)
  o = np.einsum("bnm,bmc,cd->bnd", attention, g, kernels["attn"]).reshape(SHAPE)
  np.testing.assert_allclose(layer(x, training=False), x - 1.3 * o, rtol=1e-5, atol=1e-5)


def test_gamma_zero_returns_input_exactly(rng):
  layer, x = make_layer(rng)
  assert float(layer.gamma.numpy()) == 0.0  # official sigma_ratio initialiser
  np.testing.assert_array_equal(layer(x, training=True), x)


def test_attention_rows_sum_to_one_over_pooled_keys(rng):
  layer, x = make_layer(rng)
  _, attention = layer(x, training=False, return_attention=True)
  positions = SHAPE[1] * SHAPE[2]
  assert attention.shape == (SHAPE[0], positions, positions // 4)
  np.testing.assert_allclose(np.sum(attention, axis=-1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(attention) >= 0.0)


def test_variables_are_four_bias_free_kernels_and_gamma(rng):
  layer, _ = make_layer(rng)
  shapes = sorted(tuple(v.shape) for v in layer.trainable_variables)
  assert shapes == sorted([(), (1, 1, 16, 2), (1, 1, 16, 2), (1, 1, 16, 8), (1, 1, 8, 16)])
  assert not any("bias" in v.path for v in layer.variables)
  # Each 1x1 convolution carries its own power-iteration vector u [1, C_out].
  assert sorted(tuple(v.shape) for v in layer.non_trainable_variables if v.path.endswith("/u")) == \
      sorted([(1, 2), (1, 2), (1, 8), (1, 16)])
  assert all(isinstance(getattr(layer, n), SpectralNormalization) for n in ("theta", "phi", "g", "attn"))


def test_training_updates_every_u_and_inference_none(rng, np_ref):
  layer, x = make_layer(rng)
  convs = (layer.theta, layer.phi, layer.g, layer.attn)
  before = [c.u.numpy().copy() for c in convs]
  expected = [np_ref.sn_kernel(c)[1] for c in convs]
  layer(x, training=False)
  for conv, u in zip(convs, before):
    np.testing.assert_array_equal(conv.u.numpy(), u)
  layer(x, training=True)
  for conv, u in zip(convs, expected):
    np.testing.assert_allclose(conv.u.numpy(), u, rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_tf_function(rng):
  layer, x = make_layer(rng, sn_options={"gradient": "stop", "power_iterations": 2})
  layer.gamma.assign(0.5)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert clone.sn_options == {"gradient": "stop", "power_iterations": 2}
  if not clone.built:
    clone.build(SHAPE)
  clone.set_weights(layer.get_weights())
  assert clone.theta.gradient == "stop" and clone.theta.power_iterations == 2
  compiled = tf.function(lambda inputs: clone(inputs, training=False))
  np.testing.assert_allclose(compiled(x), layer(x, training=False), rtol=1e-6, atol=1e-6)


def test_fewer_than_eight_channels_raise_value_error():
  with pytest.raises(ValueError, match="8 channels"):
    SelfAttention().build((2, 8, 8, 4))


def test_float16_logits_that_overflow_float16_stay_finite(rng, np_ref):
  # Logits of ~1e5 exceed float16's 65504; the block computes them in float32.
  layer = SelfAttention(dtype="mixed_float16")
  layer.build(SHAPE)
  x = (rng.normal(size=SHAPE) * 150.0).astype(np.float32)
  _, attention = layer(x, training=False, return_attention=True)
  assert attention.dtype == tf.float32
  attention = attention.numpy()
  assert np.all(np.isfinite(attention))
  np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-5)
  # The same logits in float16 overflow: the test input is really out of range.
  batch, height, width, channels = x.shape
  kernel, _, _ = np_ref.sn_kernel(layer.theta)
  theta = np.einsum("bhwc,cd->bhwd", x, kernel[0, 0]).reshape(batch, -1, channels // 8)
  assert np.max(np.abs(np.einsum("bnc,bnc->bn", theta, theta))) > 65504
