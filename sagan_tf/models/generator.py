"""The class-conditional ResNet generator of SAGAN."""

import keras
from keras import ops

from sagan_tf.layers.blocks import GeneratorBlock, sn_conv, sn_dense
from sagan_tf.layers.conditional_batch_norm import ConditionalBatchNormalization
from sagan_tf.layers.self_attention import SelfAttention
from sagan_tf.models.architectures import get_architecture


@keras.saving.register_keras_serializable(package="sagan_tf")
class Generator(keras.Model):
  """z, labels -> images in [-1, 1]: the official `generator_test` at 128 pixels.

  SN linear z -> 4x4x(16 width), reshaped row-major; up-blocks (see
  `GeneratorBlock`) with self-attention after the block whose output has
  `attention_resolution` pixels; then batch norm, ReLU, SN conv3x3 to RGB and
  tanh (with `grayscale`: to one grey channel, repeated as R, G and B).
  Layer names follow the official scopes (g_snh0, g_block1, ..., g_non_local,
  g_bn, g_snconv_last).

  Args:
    image_size: 32, 64, 128 or 256.
    num_classes: classes for the conditional batch norms; 0: unconditional.
    width: base channel count (official gf_dim = 64).
    z_dim: noise length.
    attention_resolution: where attention sits; 0 takes the architecture's.
    sn_options: keyword arguments for every `SpectralNormalization`.
    cbn_options: keyword arguments for the conditional batch norms.
    bn_options: keyword arguments for the last (unconditional) batch norm.
    grayscale: draw one channel and repeat it as RGB, for grey data sets: a
      three-channel G spends capacity on, and is scored for, colour noise
      that no real image has.

  Call arguments:
    z: float (batch, z_dim).
    labels: int (batch,) in [0, num_classes); None when unconditional.
    training: batch statistics, moving-statistic and u updates when True.

  Returns:
    float32 (batch, image_size, image_size, 3) in [-1, 1].
  """

  def __init__(self, image_size=128, num_classes=1000, width=64, z_dim=128, attention_resolution=0,
               sn_options=None, cbn_options=None, bn_options=None, grayscale=False, **kwargs):
    kwargs.setdefault("name", "generator")
    super().__init__(**kwargs)
    self.image_size = int(image_size)
    self.num_classes = int(num_classes)
    self.width = int(width)
    self.z_dim = int(z_dim)
    architecture = get_architecture(self.image_size)
    self.attention_resolution = int(attention_resolution or architecture.attention_resolution)
    self.sn_options = dict(sn_options or {})
    self.cbn_options = dict(cbn_options or {})
    self.bn_options = dict(bn_options or {})
    self.grayscale = bool(grayscale)
    policy = self.dtype_policy
    channels = [m * self.width for m in architecture.g_channels]
    self._initial_channels = channels[0]
    self.g_snh0 = sn_dense(4 * 4 * channels[0], "g_snh0", self.sn_options, dtype=policy)
    self.blocks = []
    self.attention = None
    self._attention_after = None
    resolution = 4
    for index, filters in enumerate(channels[1:]):
      self.blocks.append(GeneratorBlock(filters, self.num_classes, self.sn_options, self.cbn_options,
                                        name=f"g_block{index + 1}", dtype=policy))
      # Keras 3 leaves list-held layers out of tf.train.Checkpoint's object graph;
      # an attribute per block saves its weights, BN statistics and u.
      setattr(self, self.blocks[-1].name, self.blocks[-1])
      resolution *= 2
      if resolution == self.attention_resolution:
        self._attention_after = index
        self.attention = SelfAttention(self.sn_options, name="g_non_local", dtype=policy)
    if self.attention is None:
      raise ValueError(f"attention_resolution={self.attention_resolution} is not a block output of "
                       f"a {self.image_size}-pixel generator")
    self.g_bn = ConditionalBatchNormalization(0, name="g_bn", dtype=policy, **self.bn_options)
    self.g_snconv_last = sn_conv(1 if self.grayscale else 3, 3, "g_snconv_last", self.sn_options,
                                 dtype=policy)

  @property
  def attention_after(self):
    """Index in `blocks` of the block the self-attention follows (read-only)."""
    return self._attention_after

  def call(self, z, labels=None, training=False, return_attention=False):
    if self.num_classes and labels is None:
      raise ValueError("the generator is conditional: pass integer `labels`")
    h = self.g_snh0(z, training=training)
    h = ops.reshape(h, (-1, 4, 4, self._initial_channels))
    attention = None
    for index, block in enumerate(self.blocks):
      h = block(h, labels, training=training)
      if index == self._attention_after:
        h, attention = self.attention(h, training=training, return_attention=True)
    h = ops.relu(self.g_bn(h, training=training))
    images = ops.tanh(ops.cast(self.g_snconv_last(h, training=training), "float32"))
    if self.grayscale:
      images = ops.tile(images, (1, 1, 1, 3))
    if return_attention:
      return images, attention
    return images

  def get_config(self):
    # The base config carries name, trainable and the dtype policy (mixed precision).
    return {
        **super().get_config(),
        "image_size": self.image_size,
        "num_classes": self.num_classes,
        "width": self.width,
        "z_dim": self.z_dim,
        "attention_resolution": self.attention_resolution,
        "sn_options": dict(self.sn_options),
        "cbn_options": dict(self.cbn_options),
        "bn_options": dict(self.bn_options),
        "grayscale": self.grayscale,
    }
