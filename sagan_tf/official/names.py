"""Checkpoint variable names of our models, built by walking the models.

One walker (`generator_entries`, `discriminator_entries`) knows the order in
which the official code creates the layers; a `NameScheme` says how one
checkpoint format names the variables of each kind of layer. The official
TF1 code's scheme is here; TF-GAN's example has its own in `tfgan.py`.
"""

import dataclasses
from typing import Callable

import keras

OFFICIAL_PREFIX = "model/"


@dataclasses.dataclass(frozen=True)
class MappedVariable:
  """One checkpoint variable and the Keras variable it maps to.

  Attributes:
    name: the checkpoint name.
    variable: our `keras.Variable`.
    shape: the shape in the checkpoint; the value is reshaped to
      `variable.shape` (same element order) when they differ.
    sn_layer: for a spectral-norm vector u, its `SpectralNormalization`.
  """
  name: str
  variable: object
  shape: tuple
  sn_layer: object = None

  @property
  def is_u(self):
    return self.sn_layer is not None


@dataclasses.dataclass(frozen=True)
class NameScheme:
  """How one checkpoint format names the variables of each kind of layer.

  Every field is a callable (scope, layer) -> list of `MappedVariable`.

  Attributes:
    dense: an SN dense layer (g_snh0, d_sn_linear).
    conv: an SN convolution.
    cbn: a block's conditional batch norm.
    bn: the generator's last batch norm (g_bn).
    attention: a `SelfAttention` block.
    embedding: the discriminator's SN class embedding.
  """
  dense: Callable
  conv: Callable
  cbn: Callable
  bn: Callable
  attention: Callable
  embedding: Callable


def generator_entries(generator, scheme, prefix, attention_scope):
  """The generator's checkpoint variables under `scheme`, in the official creation order."""
  entries = scheme.dense(f"{prefix}g_snh0", generator.g_snh0)
  for index, block in enumerate(generator.blocks):
    scope = f"{prefix}{block.name}"
    entries += scheme.cbn(f"{scope}/cbn_0", block.cbn_0)
    entries += scheme.conv(f"{scope}/snconv1", block.snconv1)
    entries += scheme.cbn(f"{scope}/cbn_1", block.cbn_1)
    entries += scheme.conv(f"{scope}/snconv2", block.snconv2)
    entries += scheme.conv(f"{scope}/snconv3", block.snconv3)
    if index == generator.attention_after:
      entries += scheme.attention(f"{prefix}{attention_scope}", generator.attention)
  entries += scheme.bn(f"{prefix}g_bn", generator.g_bn)
  entries += scheme.conv(f"{prefix}g_snconv_last", generator.g_snconv_last)
  return entries


def discriminator_entries(discriminator, scheme, prefix, attention_scope):
  """The discriminator's checkpoint variables under `scheme`, in the official creation order."""
  entries = []
  for index, block in enumerate(discriminator.blocks):
    scope = f"{prefix}{block.name}"
    entries += scheme.conv(f"{scope}/sn_conv1", block.sn_conv1)
    entries += scheme.conv(f"{scope}/sn_conv2", block.sn_conv2)
    if block.learnable_shortcut:
      entries += scheme.conv(f"{scope}/sn_conv3", block.sn_conv3)
    if index == discriminator.attention_after:
      entries += scheme.attention(f"{prefix}{attention_scope}", discriminator.attention)
  entries += scheme.dense(f"{prefix}d_sn_linear", discriminator.d_sn_linear)
  if discriminator.d_embedding is not None:
    entries += scheme.embedding(f"{prefix}d_embedding", discriminator.d_embedding)
  return entries


# ----------------------------------------------------------------------------
# The official TF1 code's names.


def _sn_entries(scope, sn, kernel_name, bias_name):
  entries = [MappedVariable(f"{scope}/{kernel_name}", sn.kernel, tuple(sn.kernel.shape))]
  if not isinstance(sn.layer, keras.layers.Embedding) and sn.layer.use_bias:
    bias = sn.layer.bias
    entries.append(MappedVariable(f"{scope}/{bias_name}", bias, tuple(bias.shape)))
  entries.append(MappedVariable(f"{scope}/u", sn.u, tuple(sn.u.shape), sn_layer=sn))
  return entries


def _official_cbn(scope, bn):
  # ops.ConditionalBatchNorm keeps its statistics as [1, 1, 1, C] `mean`/`var`.
  stats_shape = (1, 1, 1) + tuple(bn.moving_mean.shape)
  return [MappedVariable(f"{scope}/gamma", bn.gamma, tuple(bn.gamma.shape)),
          MappedVariable(f"{scope}/beta", bn.beta, tuple(bn.beta.shape)),
          MappedVariable(f"{scope}/mean", bn.moving_mean, stats_shape),
          MappedVariable(f"{scope}/var", bn.moving_variance, stats_shape)]


def _official_bn(scope, bn):
  # contrib.layers.batch_norm: flat [C] variables under their Keras-like names.
  return [MappedVariable(f"{scope}/{name}", getattr(bn, name), tuple(getattr(bn, name).shape))
          for name in ("beta", "gamma", "moving_mean", "moving_variance")]


def _official_attention(scope, attention):
  entries = []
  for name in ("theta", "phi", "g", "attn"):
    entries += _sn_entries(f"{scope}/sn_conv_{name}", getattr(attention, name), "w", None)
  entries.append(MappedVariable(f"{scope}/sigma_ratio", attention.gamma, ()))
  return entries


OFFICIAL_SCHEME = NameScheme(
    dense=lambda scope, sn: _sn_entries(scope, sn, "Matrix", "bias"),
    conv=lambda scope, sn: _sn_entries(scope, sn, "w", "biases"),
    cbn=_official_cbn,
    bn=_official_bn,
    attention=_official_attention,
    embedding=lambda scope, sn: _sn_entries(scope, sn, "embedding_map", None))


def official_generator_entries(generator, prefix=OFFICIAL_PREFIX):
  """The generator's official checkpoint variables, in the official creation order."""
  return generator_entries(generator, OFFICIAL_SCHEME, prefix, generator.attention.name)


def official_discriminator_entries(discriminator, prefix=OFFICIAL_PREFIX):
  """The discriminator's official checkpoint variables, in the official creation order."""
  return discriminator_entries(discriminator, OFFICIAL_SCHEME, prefix,
                               discriminator.attention.name)


def official_entries(generator, discriminator, prefix=OFFICIAL_PREFIX):
  """Every official checkpoint variable of the two models, as `MappedVariable`s.

  Built from the models' structure, so any width, class count and image size
  gets the names the official code would give it (for 32, 64 and 256 pixels,
  where no official model exists, the analogous names).

  Args:
    generator: a built `Generator`.
    discriminator: a built `Discriminator`.
    prefix: the official top-level scope.

  Returns:
    A list of `MappedVariable`: generator variables first, in the official
    creation order, then the discriminator's.
  """
  return (official_generator_entries(generator, prefix) +
          official_discriminator_entries(discriminator, prefix))


def official_variable_map(generator, discriminator):
  """Official checkpoint name -> our `keras.Variable`, for every official model variable.

  Includes the spectral-norm vectors (`.../u`) and the batch-norm moving
  statistics; our extra `sigma` diagnostics have no official counterpart.
  Shapes can differ only by the [1, 1, 1, C] of the official CBN statistics;
  see `official_shapes`. Adam slots are `<name>/Adam` (m) and
  `<name>/Adam_1` (v) of the trainable entries.
  """
  return {entry.name: entry.variable for entry in official_entries(generator, discriminator)}


def official_shapes(generator, discriminator):
  """Official checkpoint name -> the variable's shape in an official checkpoint."""
  return {entry.name: entry.shape for entry in official_entries(generator, discriminator)}
