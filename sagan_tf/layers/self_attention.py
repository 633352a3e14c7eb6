"""The self-attention block of SAGAN, as the official code builds it."""

import keras
from keras import ops

from sagan_tf.layers.spectral_norm import SpectralNormalization


def _pool(x):
  return ops.max_pool(x, pool_size=2, strides=2, padding="valid")


@keras.saving.register_keras_serializable(package="sagan_tf")
class SelfAttention(keras.layers.Layer):
  """Non-local block y = x + gamma * o with a scalar gamma initialised to 0.

  Follows the official `sn_non_local_block_sim`, which differs from the
  paper's Fig. 2 (v1): for x of shape (B, H, W, C) and N = H*W,
  theta = conv1x1(x) -> C/8, phi = maxpool2x2(conv1x1(x)) -> C/8,
  g = maxpool2x2(conv1x1(x)) -> C/2, beta = softmax(theta phi^T) over the
  N/4 pooled keys (paper Eq. 1, without 1/sqrt(d) scaling),
  o = conv1x1(beta g) -> C (paper Eq. 2). All four 1x1 convolutions are
  spectrally normalised and have no bias. gamma starts at 0 so the block
  begins as the identity (paper Eq. 3).

  Args:
    sn_options: keyword arguments for `SpectralNormalization`.
    kernel_initializer: initializer of the four 1x1 kernels (official:
      Glorot uniform).

  Call arguments:
    inputs: (batch, height, width, channels), height and width even.
    training: passed to the spectral norms.
    return_attention: also return the attention map.

  Returns:
    (batch, height, width, channels) output; with `return_attention`, also the
    map (batch, height*width, height*width/4), rows summing to 1, in the
    row-major order of the query pixels and of the pooled key pixels.

  Reference:
    Zhang et al., SAGAN, ICML 2019, Sec. 3, Eq. 1-3.
  """

  def __init__(self, sn_options=None, kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    self.sn_options = dict(sn_options or {})
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def _conv(self, filters, name):
    conv = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=self.kernel_initializer,
                               name=name, dtype=self.dtype_policy)
    return SpectralNormalization(conv, name=name, dtype=self.dtype_policy, **self.sn_options)

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels < 8:
      raise ValueError(f"SelfAttention needs at least 8 channels, received input_shape={input_shape}")
    self.theta = self._conv(channels // 8, "sn_conv_theta")
    self.phi = self._conv(channels // 8, "sn_conv_phi")
    self.g = self._conv(channels // 2, "sn_conv_g")
    self.attn = self._conv(channels, "sn_conv_attn")
    self.theta.build(input_shape)
    self.phi.build(input_shape)
    self.g.build(input_shape)
    self.attn.build(tuple(input_shape[:-1]) + (channels // 2,))
    self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

  def call(self, inputs, training=False, return_attention=False):
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    positions = height * width
    theta = ops.reshape(self.theta(inputs, training=training), (-1, positions, channels // 8))
    phi = ops.reshape(_pool(self.phi(inputs, training=training)), (-1, positions // 4, channels // 8))
    # Logits and softmax in float32: a dot product over C/8 channels of
    # unnormalised features overflows float16 (max 65504) easily.
    logits = ops.matmul(ops.cast(theta, "float32"),
                        ops.transpose(ops.cast(phi, "float32"), (0, 2, 1)))
    attention = ops.softmax(logits, axis=-1)
    g = ops.reshape(_pool(self.g(inputs, training=training)), (-1, positions // 4, channels // 2))
    attended = ops.matmul(ops.cast(attention, g.dtype), g)
    attended = ops.reshape(attended, (-1, height, width, channels // 2))
    outputs = inputs + ops.cast(self.gamma, inputs.dtype) * self.attn(attended, training=training)
    if return_attention:
      return outputs, attention
    return outputs

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "sn_options": dict(self.sn_options),
        "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
    })
    return config
