"""The projection discriminator of SAGAN."""

import keras
from keras import ops

from sagan_tf.layers.blocks import DiscriminatorBlock, sn_dense
from sagan_tf.layers.self_attention import SelfAttention
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.models.architectures import get_architecture


@keras.saving.register_keras_serializable(package="sagan_tf")
class Discriminator(keras.Model):
  """images, labels -> logits: the official `discriminator_test` at 128 pixels.

  An optimised first block, pre-activation down-blocks with self-attention
  after the block whose output has `attention_resolution` pixels, ReLU,
  global sum pooling to h, then psi(h) + <embed(y), h>: an SN linear layer
  plus the projection of Miyato & Koyama (2018, Eq. 3) with an SN class
  embedding. No batch norm, no sigmoid. Layer names follow the official
  scopes (d_optimized_block1, d_block2, ..., d_non_local, d_sn_linear,
  d_embedding).

  Args:
    image_size: 32, 64, 128 or 256.
    num_classes: classes of the projection; 0: unconditional.
    width: base channel count (official df_dim = 64).
    attention_resolution: where attention sits; 0 takes the architecture's.
    sn_options: keyword arguments for every `SpectralNormalization`.

  Call arguments:
    images: float (batch, image_size, image_size, 3) in [-1, 1].
    labels: int (batch,); None when unconditional.
    training: write the spectral-norm vectors when True.

  Returns:
    float32 logits of shape (batch,).
  """

  def __init__(self, image_size=128, num_classes=1000, width=64, attention_resolution=0,
               sn_options=None, **kwargs):
    kwargs.setdefault("name", "discriminator")
    super().__init__(**kwargs)
    self.image_size = int(image_size)
    self.num_classes = int(num_classes)
    self.width = int(width)
    architecture = get_architecture(self.image_size)
    self.attention_resolution = int(attention_resolution or architecture.attention_resolution)
    self.sn_options = dict(sn_options or {})
    policy = self.dtype_policy
    self.blocks = []
    self.attention = None
    self._attention_after = None
    in_channels, resolution = 3, self.image_size
    for index, (multiplier, down) in enumerate(zip(architecture.d_channels,
                                                  architecture.d_downsample)):
      filters = multiplier * self.width
      name = "d_optimized_block1" if index == 0 else f"d_block{index + 1}"
      self.blocks.append(DiscriminatorBlock(filters, in_channels, downsample=down, optimized=index == 0,
                                            sn_options=self.sn_options, name=name, dtype=policy))
      # Keras 3 leaves list-held layers out of tf.train.Checkpoint's object graph;
      # an attribute per block saves its weights, BN statistics and u.
      setattr(self, self.blocks[-1].name, self.blocks[-1])
      in_channels = filters
      resolution = resolution // 2 if down else resolution
      if resolution == self.attention_resolution and self.attention is None:
        self._attention_after = index
        self.attention = SelfAttention(self.sn_options, name="d_non_local", dtype=policy)
    if self.attention is None:
      raise ValueError(f"attention_resolution={self.attention_resolution} is not a block output of "
                       f"a {self.image_size}-pixel discriminator")
    self.feature_channels = in_channels
    # The projection runs in float32 (its layers' compute dtype), see `call`.
    self.d_sn_linear = sn_dense(1, "d_sn_linear", self.sn_options, dtype="float32")
    self.d_embedding = None
    if self.num_classes:
      embedding = keras.layers.Embedding(self.num_classes, in_channels,
                                         embeddings_initializer="glorot_uniform",
                                         name="d_embedding", dtype="float32")
      self.d_embedding = SpectralNormalization(embedding, name="d_embedding", dtype="float32",
                                               **self.sn_options)

  @property
  def attention_after(self):
    """Index in `blocks` of the block the self-attention follows (read-only)."""
    return self._attention_after

  def call(self, images, labels=None, training=False):
    if self.num_classes and labels is None:
      raise ValueError("the discriminator is conditional: pass integer `labels`")
    h = images
    for index, block in enumerate(self.blocks):
      h = block(h, training=training)
      if index == self._attention_after:
        h = self.attention(h, training=training)
    # Pool and project in float32: sums over many positions lose precision in float16.
    h = ops.sum(ops.cast(ops.relu(h), "float32"), axis=(1, 2))
    logits = self.d_sn_linear(h, training=training)[:, 0]
    if self.d_embedding is not None:
      embedded = self.d_embedding(labels, training=training)
      logits = logits + ops.sum(embedded * h, axis=1)
    return logits

  def get_config(self):
    # The base config carries name, trainable and the dtype policy (mixed precision).
    return {
        **super().get_config(),
        "image_size": self.image_size,
        "num_classes": self.num_classes,
        "width": self.width,
        "attention_resolution": self.attention_resolution,
        "sn_options": dict(self.sn_options),
    }
