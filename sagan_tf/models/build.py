"""Builds a generator and discriminator pair from arguments or a `ModelConfig`."""

import keras
import numpy as np

from sagan_tf.configs.experiment import INITS, ModelConfig
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.models.discriminator import Discriminator
from sagan_tf.models.generator import Generator


def build_sagan(image_size=128, num_classes=1000, width=64, z_dim=128, *, d_width=None,
                sn_gradient="autodiff", sn_power_iterations=1, sn_epsilon=1e-12, sn_relaxed=False,
                bn_epsilon=1e-5, cbn_momentum=0.999, g_bn_momentum=0.9999, g_bn_bessel=False,
                sync_batch_norm=False, g_attention_resolution=0, d_attention_resolution=0,
                init="official", class_gain="official", grayscale=False, dtype=None, build=True):
  """Returns (generator, discriminator) with the official semantics by default.

  `build_sagan(128, 1000)` is the paper's ImageNet model: 42,078,852
  generator and 39,463,618 discriminator trainable parameters.

  Args:
    image_size: 32, 64, 128 or 256.
    num_classes: classes; 0 for an unconditional pair.
    width: generator base width (and discriminator's unless `d_width`).
    z_dim: noise length.
    d_width: discriminator base width.
    sn_gradient, sn_power_iterations, sn_epsilon, sn_relaxed: see
      `SpectralNormalization` (`sn_relaxed` is its `relaxed`).
    bn_epsilon, cbn_momentum, g_bn_momentum, g_bn_bessel, sync_batch_norm:
      see `ConditionalBatchNormalization`.
    g_attention_resolution, d_attention_resolution: 0 takes the
      architecture's (32 at 128 pixels).
    init: "official" or "orthogonal", see `ModelConfig.init`; orthogonal
      kernels are drawn when the models are built.
    class_gain: "official" or "one_plus_embedding", see
      `ConditionalBatchNormalization`.
    grayscale: G draws one grey channel, repeated as RGB (see `Generator`).
    dtype: a Keras dtype policy name such as "mixed_bfloat16"; None takes the
      global policy.
    build: create the variables now by calling both models once.
  """
  sn_options = {"power_iterations": sn_power_iterations, "gradient": sn_gradient,
                "epsilon": sn_epsilon, "relaxed": sn_relaxed}
  cbn_options = {"momentum": cbn_momentum, "epsilon": bn_epsilon, "synchronized": sync_batch_norm}
  if class_gain != "official":  # The official model's layer configs stay as they were.
    cbn_options.update(class_gain=class_gain,
                       table_initializer="orthogonal" if init == "orthogonal" else "glorot_uniform")
  bn_options = {"momentum": g_bn_momentum, "epsilon": bn_epsilon, "synchronized": sync_batch_norm,
                "bessel_moving_variance": g_bn_bessel}
  generator = Generator(image_size, num_classes, width, z_dim, g_attention_resolution,
                        sn_options=sn_options, cbn_options=cbn_options, bn_options=bn_options,
                        grayscale=grayscale, dtype=dtype)
  discriminator = Discriminator(image_size, num_classes, d_width or width, d_attention_resolution,
                                sn_options=sn_options, dtype=dtype)
  if init not in INITS:
    raise ValueError(f"`init` must be one of {INITS}, received init={init!r}")
  if init == "orthogonal" and not build:
    raise ValueError("init='orthogonal' draws the kernels when the models are built: pass build=True")
  if build:
    build_models(generator, discriminator)
    if init == "orthogonal":
      for model in (generator, discriminator):
        orthogonalize_kernels(model)
  return generator, discriminator


def orthogonalize_kernels(model):
  """Redraws every spectrally normalised kernel of a built model as an orthogonal matrix.

  BigGAN-PyTorch's `init.orthogonal_` on Conv2d, Linear and Embedding
  weights: a kernel viewed as [K, C_out] (an embedding as [classes, dim])
  gets orthonormal columns when K >= C_out, orthonormal rows otherwise.
  Biases stay 0. Seeded by Keras' global seed, like the official initialisers.
  """
  for layer in model._flatten_layers(include_self=False, recursive=True):
    if isinstance(layer, SpectralNormalization):
      kernel = layer.kernel
      kernel.assign(keras.initializers.Orthogonal()(kernel.shape, dtype=kernel.dtype))


def build_models(generator, discriminator=None):
  """Creates every variable by running the models once in inference mode."""
  z = np.zeros((1, generator.z_dim), np.float32)
  labels = np.zeros((1,), np.int32) if generator.num_classes else None
  images = generator(z, labels, training=False)
  if discriminator is not None:
    d_labels = np.zeros((1,), np.int32) if discriminator.num_classes else None
    discriminator(images, d_labels, training=False)


def build_from_config(config: ModelConfig, dtype=None, build=True):
  """Returns (generator, discriminator) for a `ModelConfig`."""
  return build_sagan(
      config.image_size, config.num_classes, config.g_width, config.z_dim, d_width=config.d_width,
      sn_gradient=config.sn_gradient, sn_power_iterations=config.sn_power_iterations,
      sn_epsilon=config.sn_epsilon, bn_epsilon=config.bn_epsilon,
      cbn_momentum=config.cbn_momentum, g_bn_momentum=config.g_bn_momentum,
      g_bn_bessel=config.g_bn_bessel, sync_batch_norm=config.sync_batch_norm,
      g_attention_resolution=config.g_attention_resolution,
      d_attention_resolution=config.d_attention_resolution, init=config.init,
      class_gain=config.class_gain, grayscale=config.grayscale, dtype=dtype, build=build)


def count_parameters(model):
  """Number of trainable scalars of a built model."""
  return int(sum(np.prod(v.shape) for v in model.trainable_variables))
