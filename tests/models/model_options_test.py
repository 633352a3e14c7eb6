"""Tests of the BigGAN-PyTorch model options (model.init, model.class_gain, model.d_sn_update)
against NumPy: orthogonality, the 1 + embedding scale, and power iterations of D's u."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.layers import ConditionalBatchNormalization
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.models import build_sagan
from sagan_tf.models.build import build_from_config
from sagan_tf.training.components import build_components

NUM_CLASSES = 3


def sn_layers(model):
  return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
          if isinstance(layer, SpectralNormalization)]


def cbn_layers(model):
  return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
          if isinstance(layer, ConditionalBatchNormalization) and layer.num_classes]


def orthogonality_error(matrix):
  """max |Q^T Q - I| over the smaller Gram matrix of `matrix`."""
  matrix = np.asarray(matrix, np.float64)
  gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
  return np.abs(gram - np.eye(gram.shape[0])).max()


def kernel_matrix(layer):
  """The [K, C_out] view of a kernel (an embedding table as [classes, dim])."""
  kernel = layer.kernel.numpy()
  return kernel if kernel.ndim == 2 else kernel.reshape(-1, kernel.shape[-1])


def test_orthogonal_init_gives_orthonormal_kernels_and_zero_biases():
  generator, discriminator = build_sagan(32, NUM_CLASSES, width=8, z_dim=16, init="orthogonal",
                                         class_gain="one_plus_embedding")
  layers = sn_layers(generator) + sn_layers(discriminator)
  assert len(layers) > 20 and any(l._is_embedding for l in layers)
  for layer in layers:
    assert orthogonality_error(kernel_matrix(layer)) < 1e-5, layer.path
    if getattr(layer.layer, "bias", None) is not None:
      assert not np.any(layer.layer.bias.numpy()), layer.path
  # BigGAN-PyTorch orthogonalises the ccbn embeddings too: [classes, C] with orthonormal rows.
  for layer in cbn_layers(generator):
    for table in (layer.gamma, layer.beta):
      assert orthogonality_error(table.numpy()) < 1e-5, layer.path


def test_official_init_is_not_orthogonal():
  generator, discriminator = build_sagan(32, NUM_CLASSES, width=8, z_dim=16)
  errors = [orthogonality_error(kernel_matrix(l)) for l in sn_layers(generator) + sn_layers(discriminator)]
  assert min(errors) > 1e-2
  for layer in cbn_layers(generator):
    assert np.all(layer.gamma.numpy() == 1.0) and np.all(layer.beta.numpy() == 0.0)
    assert layer.class_gain == "official"


def test_one_plus_embedding_output_is_one_plus_gain_times_xhat_plus_bias(rng):
  layer = ConditionalBatchNormalization(NUM_CLASSES, class_gain="one_plus_embedding", epsilon=1e-3)
  x = (2.0 + 3.0 * rng.normal(size=(4, 5, 5, 6))).astype(np.float32)
  labels = np.array([0, 2, 1, 2])
  layer.build(x.shape)
  gain, bias = layer.gamma.numpy(), layer.beta.numpy()
  # Glorot-uniform tables: every class has its own scale and offset from step 0.
  for table in (gain, bias):
    assert len({tuple(row) for row in table}) == NUM_CLASSES and np.abs(table).max() > 0.05
  x64 = x.astype(np.float64)
  xhat = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + 1e-3)
  expected = (1.0 + gain[labels][:, None, None, :]) * xhat + bias[labels][:, None, None, :]
  np.testing.assert_allclose(layer(x, labels, training=True), expected, rtol=1e-5, atol=1e-5)
  restored = ConditionalBatchNormalization.from_config(layer.get_config())
  assert restored.class_gain == "one_plus_embedding"


def test_model_config_fields_reach_the_models():
  model = configs.ModelConfig(image_size=32, num_classes=NUM_CLASSES, g_width=8, d_width=8, z_dim=16,
                              class_gain="one_plus_embedding")
  generator, _ = build_from_config(model)
  assert all(l.one_plus_embedding for l in cbn_layers(generator))
  for field, value in (("init", "xavier"), ("class_gain", "one"), ("d_sn_update", "g_update")):
    with pytest.raises(ValueError, match=rf"^model\.{field} must be one of \("):
      configs.apply_overrides(configs.ExperimentConfig(), [f"model.{field}={value}"])


def power_iteration(u, kernel):
  """One official power iteration in float64: v = l2n(u W^T), u' = l2n(v W)."""
  matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
  v = u @ matrix.T
  v = v / (np.linalg.norm(v) + 1e-12)
  u = v @ matrix
  return u / (np.linalg.norm(u) + 1e-12)


def d_sn_state_after_one_iteration(d_sn_update):
  """(u0, W0, u1, W1) of D's second conv around one D-then-G iteration of the real TrainStep."""
  config = configs.ExperimentConfig(
      model=configs.ModelConfig(image_size=32, num_classes=NUM_CLASSES, g_width=8, d_width=8,
                                z_dim=16, d_sn_update=d_sn_update),
      optimizer=configs.OptimizerConfig(d_learning_rate=1e-2),
      train=configs.TrainConfig(batch_size=2))
  strategy = tf.distribute.OneDeviceStrategy("CPU:0")
  parts = build_components(config, strategy)
  layer = parts.discriminator.d_optimized_block1.sn_conv2
  u0, w0 = layer.u.numpy()[0].astype(np.float64), layer.kernel.numpy()
  images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  dataset = tf.data.Dataset.from_tensors((images, np.array([0, 2], np.int32))).repeat()
  parts.train_step.loop(iter(strategy.experimental_distribute_dataset(dataset)), tf.constant(1))
  return u0, w0, layer.u.numpy()[0], layer.kernel.numpy()


@pytest.mark.parametrize("d_sn_update", ["d_update", "both"])
def test_d_sn_update_writes_u_in_the_updates_it_names(d_sn_update):
  u0, w0, u1, w1 = d_sn_state_after_one_iteration(d_sn_update)
  assert np.abs(w1 - w0).max() > 1e-3  # D's update moved W, so the two iterations differ.
  after_d_update = power_iteration(u0, w0)
  after_g_update = power_iteration(after_d_update, w1)
  assert np.abs(after_g_update - after_d_update).max() > 1e-5
  expected = after_g_update if d_sn_update == "both" else after_d_update
  np.testing.assert_allclose(u1, expected, atol=2e-6)


def test_grayscale_generator_draws_one_channel_as_rgb_and_trains():
  config = configs.ExperimentConfig(
      model=configs.ModelConfig(image_size=32, num_classes=NUM_CLASSES, g_width=8, d_width=8,
                                z_dim=16, grayscale=True),
      train=configs.TrainConfig(batch_size=2))
  assert not configs.ModelConfig().grayscale  # Official: three channels.
  strategy = tf.distribute.OneDeviceStrategy("CPU:0")
  parts = build_components(config, strategy)
  generator = parts.generator
  assert generator.g_snconv_last.kernel.shape[-1] == 1
  z = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
  labels = np.array([0, 1, 2, 0])

  def check_gray():
    images = generator(z, labels, training=False).numpy()
    assert images.shape == (4, 32, 32, 3) and np.abs(images).max() <= 1.0
    np.testing.assert_array_equal(images[..., 0], images[..., 1])
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    return images

  before, kernel = check_gray(), generator.g_snconv_last.kernel.numpy()
  images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  dataset = tf.data.Dataset.from_tensors((images, np.array([0, 2], np.int32))).repeat()
  parts.train_step.loop(iter(strategy.experimental_distribute_dataset(dataset)), tf.constant(1))
  # D's gradient reached the one-channel kernel through the repeat; still grey.
  assert not np.array_equal(generator.g_snconv_last.kernel.numpy(), kernel)
  assert not np.array_equal(check_gray(), before)
