"""Tests of the ResNet generator and discriminator blocks against NumPy compositions."""

import keras
import numpy as np
import pytest

from sagan_tf.layers import DiscriminatorBlock, GeneratorBlock


def randomize(layer, rng):
  """Random kernels, biases and CBN tables: zero biases and unit gammas hide wiring errors."""
  for variable in layer.trainable_variables:
    offset = 1.0 if variable.path.endswith("gamma") else 0.0
    variable.assign(offset + 0.5 * rng.normal(size=variable.shape))


def np_conv(sn_layer, x, np_ref):
  kernel, _, _ = np_ref.sn_kernel(sn_layer)
  return np_ref.conv2d_same(x, kernel, sn_layer.layer.bias.numpy())


def np_train_bn(cbn, x, labels, np_ref):
  mean, variance = x.mean((0, 1, 2)), x.var((0, 1, 2))
  gamma = cbn.gamma.numpy()[labels][:, None, None, :]
  beta = cbn.beta.numpy()[labels][:, None, None, :]
  return np_ref.batch_norm(x, mean, variance, gamma, beta, cbn.epsilon)


def relu(x):
  return np.maximum(x, 0.0)


def test_generator_block_matches_numpy(rng, np_ref):
  block = GeneratorBlock(8, num_classes=3)
  x = rng.normal(size=(3, 4, 4, 16)).astype(np.float32)
  labels = np.array([2, 0, 2])
  block(x, labels, training=False)  # creates the sublayers' variables
  randomize(block, rng)
  x64 = np.asarray(x, np.float64)
  # Official `block`: CBN-ReLU-up-conv3x3-CBN-ReLU-conv3x3 plus up-conv1x1, no final activation.
  h = np_conv(block.snconv1, np_ref.upsample2(relu(np_train_bn(block.cbn_0, x64, labels, np_ref))),
              np_ref)
  h = np_conv(block.snconv2, relu(np_train_bn(block.cbn_1, h, labels, np_ref)), np_ref)
  expected = h + np_conv(block.snconv3, np_ref.upsample2(x64), np_ref)
  outputs = block(x, labels, training=True)
  assert outputs.shape == block.compute_output_shape(x.shape) == (3, 8, 8, 8)
  np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_generator_block_variables():
  block = GeneratorBlock(8, num_classes=3)
  block(np.zeros((2, 4, 4, 16), np.float32), np.zeros(2, np.int32), training=False)
  shapes = sorted(tuple(v.shape) for v in block.trainable_variables)
  # cbn_0 tables [3, 16], cbn_1 tables [3, 8]; convs 3x3 16->8, 3x3 8->8, 1x1 16->8 with biases.
  assert shapes == sorted([(3, 16), (3, 16), (3, 8), (3, 8), (3, 3, 16, 8), (8,), (3, 3, 8, 8), (8,),
                           (1, 1, 16, 8), (8,)])


def np_discriminator_block(block, x, np_ref):
  if block.optimized:
    # Official `optimized_block`: no input activation; shortcut pools, then convolves.
    h = np_ref.avg_pool2(np_conv(block.sn_conv2, relu(np_conv(block.sn_conv1, x, np_ref)), np_ref))
    return h + np_conv(block.sn_conv3, np_ref.avg_pool2(x), np_ref)
  h = np_conv(block.sn_conv2, relu(np_conv(block.sn_conv1, relu(x), np_ref)), np_ref)
  shortcut = np_conv(block.sn_conv3, x, np_ref) if block.learnable_shortcut else x
  if block.downsample:
    h, shortcut = np_ref.avg_pool2(h), np_ref.avg_pool2(shortcut)
  return h + shortcut


@pytest.mark.parametrize("in_channels, filters, downsample, optimized, shortcut_conv", [
    (3, 8, True, True, True),  # d_optimized_block1
    (8, 16, True, False, True),  # d_block2..5
    (8, 8, False, False, False),  # d_block6: identity shortcut
    (8, 16, False, False, True),  # channel change without pooling
])
def test_discriminator_block_matches_numpy(in_channels, filters, downsample, optimized,
                                           shortcut_conv, rng, np_ref):
  block = DiscriminatorBlock(filters, in_channels, downsample=downsample, optimized=optimized)
  x = rng.normal(size=(2, 8, 8, in_channels)).astype(np.float32)
  block(x, training=False)
  randomize(block, rng)
  assert hasattr(block, "sn_conv3") == shortcut_conv
  assert len(block.trainable_variables) == (6 if shortcut_conv else 4)
  expected = np_discriminator_block(block, np.asarray(x, np.float64), np_ref)
  outputs = block(x, training=True)
  size = 4 if downsample else 8
  assert outputs.shape == block.compute_output_shape(x.shape) == (2, size, size, filters)
  np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_training_updates_u_of_every_convolution(rng):
  block = DiscriminatorBlock(8, 3, optimized=True)
  x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  block(x, training=False)
  convs = (block.sn_conv1, block.sn_conv2, block.sn_conv3)
  before = [c.u.numpy().copy() for c in convs]
  block(x, training=False)
  assert all(np.array_equal(c.u.numpy(), u) for c, u in zip(convs, before))
  block(x, training=True)
  assert all(not np.allclose(c.u.numpy(), u) for c, u in zip(convs, before))


@pytest.mark.parametrize("block_cls, kwargs", [
    (GeneratorBlock, {"filters": 8, "num_classes": 3, "sn_options": {"gradient": "stop"},
                      "bn_options": {"momentum": 0.9, "epsilon": 1e-3}}),
    (DiscriminatorBlock, {"filters": 8, "in_channels": 8, "downsample": False,
                          "sn_options": {"relaxed": True}}),
])
def test_block_config_round_trip(block_cls, kwargs, rng):
  block = block_cls(**kwargs)
  x = rng.normal(size=(2, 4, 4, 8)).astype(np.float32)
  args = (x, np.array([0, 2])) if block_cls is GeneratorBlock else (x,)
  block(*args, training=False)
  randomize(block, rng)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
  assert type(clone) is block_cls
  for key, value in kwargs.items():
    assert getattr(clone, key) == value
  clone(*args, training=False)
  clone.set_weights(block.get_weights())
  np.testing.assert_array_equal(clone(*args, training=True), block(*args, training=True))
