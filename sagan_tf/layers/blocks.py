"""Residual up- and down-sampling blocks of the SAGAN generator and discriminator."""

import keras
from keras import ops

from sagan_tf.layers.conditional_batch_norm import ConditionalBatchNormalization
from sagan_tf.layers.spectral_norm import SpectralNormalization


def sn_conv(filters, kernel_size, name, sn_options, use_bias=True, dtype=None):
  """A spectrally normalised, Glorot-uniform, SAME-padded convolution with bias."""
  conv = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias,
                             kernel_initializer="glorot_uniform", name=name, dtype=dtype)
  return SpectralNormalization(conv, name=name, dtype=dtype, **sn_options)


def sn_dense(units, name, sn_options, dtype=None):
  """A spectrally normalised, Glorot-uniform linear layer with bias."""
  dense = keras.layers.Dense(units, kernel_initializer="glorot_uniform", name=name, dtype=dtype)
  return SpectralNormalization(dense, name=name, dtype=dtype, **sn_options)


def upsample(x):
  """2x nearest-neighbour upsampling (the official `resize_nearest_neighbor`).

  Each pixel becomes a 2x2 block: a tile of a (b, h, 1, w, 1, c) view. The
  same values as `ops.repeat` on both axes, in three ops where repeat's TF
  lowering takes ~60 per axis (and as many again in the gradient).
  """
  _, height, width, channels = x.shape
  x = ops.reshape(x, (-1, height, 1, width, 1, channels))
  x = ops.tile(x, (1, 1, 2, 1, 2, 1))
  return ops.reshape(x, (-1, 2 * height, 2 * width, channels))


def downsample(x):
  """2x2 average pooling, stride 2, VALID."""
  return ops.average_pool(x, pool_size=2, strides=2, padding="valid")


@keras.saving.register_keras_serializable(package="sagan_tf")
class GeneratorBlock(keras.layers.Layer):
  """Up-block: CBN-ReLU-upsample-conv3x3-CBN-ReLU-conv3x3 plus upsample-conv1x1.

  The official `generator.block`: the shortcut is always a 1x1 convolution of
  the upsampled input, and the sum has no activation after it.

  Args:
    filters: output channels.
    num_classes: classes of the conditional batch norms (0: unconditional).
    sn_options: keyword arguments for `SpectralNormalization`.
    bn_options: keyword arguments for `ConditionalBatchNormalization`.

  Call arguments:
    inputs: (batch, h, w, c_in); labels: int (batch,); training: bool.

  Returns:
    (batch, 2h, 2w, filters).
  """

  def __init__(self, filters, num_classes=0, sn_options=None, bn_options=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.num_classes = int(num_classes)
    self.sn_options = dict(sn_options or {})
    self.bn_options = dict(bn_options or {})
    policy = self.dtype_policy
    self.cbn_0 = ConditionalBatchNormalization(self.num_classes, name="cbn_0", dtype=policy,
                                               **self.bn_options)
    self.snconv1 = sn_conv(self.filters, 3, "snconv1", self.sn_options, dtype=policy)
    self.cbn_1 = ConditionalBatchNormalization(self.num_classes, name="cbn_1", dtype=policy,
                                               **self.bn_options)
    self.snconv2 = sn_conv(self.filters, 3, "snconv2", self.sn_options, dtype=policy)
    self.snconv3 = sn_conv(self.filters, 1, "snconv3", self.sn_options, dtype=policy)

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    upsampled = (input_shape[0], None, None, input_shape[-1])
    output = (input_shape[0], None, None, self.filters)
    self.cbn_0.build(input_shape)
    self.snconv1.build(upsampled)
    self.cbn_1.build(output)
    self.snconv2.build(output)
    self.snconv3.build(upsampled)

  def call(self, inputs, labels=None, training=False):
    h = ops.relu(self.cbn_0(inputs, labels, training=training))
    h = self.snconv1(upsample(h), training=training)
    h = ops.relu(self.cbn_1(h, labels, training=training))
    h = self.snconv2(h, training=training)
    return h + self.snconv3(upsample(inputs), training=training)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[1] * 2, input_shape[2] * 2, self.filters)

  def get_config(self):
    config = super().get_config()
    config.update({"filters": self.filters, "num_classes": self.num_classes,
                   "sn_options": dict(self.sn_options), "bn_options": dict(self.bn_options)})
    return config


@keras.saving.register_keras_serializable(package="sagan_tf")
class DiscriminatorBlock(keras.layers.Layer):
  """Pre-activation down-block, or the optimised first block.

  Regular (official `discriminator.block`): ReLU-conv3x3-ReLU-conv3x3, then
  2x2 average pooling when downsampling; shortcut conv1x1 then pooling,
  present when the block downsamples or changes the channel count.
  Optimised (`optimized_block`, the first block): conv3x3-ReLU-conv3x3-pool,
  no activation on the input; shortcut pool then conv1x1.

  Args:
    filters: output channels.
    in_channels: input channels (decides whether a shortcut conv exists).
    downsample: halve the resolution.
    optimized: build the optimised first block.
    sn_options: keyword arguments for `SpectralNormalization`.
  """

  def __init__(self, filters, in_channels, downsample=True, optimized=False, sn_options=None,
               **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.in_channels = int(in_channels)
    self.downsample = bool(downsample)
    self.optimized = bool(optimized)
    self.sn_options = dict(sn_options or {})
    policy = self.dtype_policy
    self.sn_conv1 = sn_conv(self.filters, 3, "sn_conv1", self.sn_options, dtype=policy)
    self.sn_conv2 = sn_conv(self.filters, 3, "sn_conv2", self.sn_options, dtype=policy)
    self.learnable_shortcut = self.optimized or self.downsample or self.in_channels != self.filters
    if self.learnable_shortcut:
      self.sn_conv3 = sn_conv(self.filters, 1, "sn_conv3", self.sn_options, dtype=policy)

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    self.sn_conv1.build(input_shape)
    self.sn_conv2.build(input_shape[:-1] + (self.filters,))
    if self.learnable_shortcut:
      self.sn_conv3.build(input_shape)

  def call(self, inputs, training=False):
    if self.optimized:
      h = ops.relu(self.sn_conv1(inputs, training=training))
      h = downsample(self.sn_conv2(h, training=training))
      return h + self.sn_conv3(downsample(inputs), training=training)
    h = self.sn_conv1(ops.relu(inputs), training=training)
    h = self.sn_conv2(ops.relu(h), training=training)
    shortcut = inputs
    if self.learnable_shortcut:
      shortcut = self.sn_conv3(shortcut, training=training)
    if self.downsample:
      h, shortcut = downsample(h), downsample(shortcut)
    return h + shortcut

  def compute_output_shape(self, input_shape):
    factor = 2 if self.downsample else 1
    return (input_shape[0], input_shape[1] // factor, input_shape[2] // factor, self.filters)

  def get_config(self):
    config = super().get_config()
    config.update({"filters": self.filters, "in_channels": self.in_channels,
                   "downsample": self.downsample, "optimized": self.optimized,
                   "sn_options": dict(self.sn_options)})
    return config
