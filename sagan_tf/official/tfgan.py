"""TF-GAN's `self_attention_estimator` example: its checkpoint names and `load_tfgan`.

Names as official-sagan.md section 10 [T]; the models are walked by the
same `names.generator_entries` / `discriminator_entries` as the official
code's, with TF-GAN's `NameScheme`. TF-GAN's u vectors sit on the other
side of W than ours, so they are converted and refined by power iteration
(`estimate_u`).
"""

import dataclasses
import re

from absl import logging
import keras
import numpy as np

from sagan_tf.configs import presets
from sagan_tf.models.build import build_sagan
from sagan_tf.official.names import (MappedVariable, NameScheme, discriminator_entries,
                                     generator_entries)
from sagan_tf.official.reader import (LoadedModels, LoadReport, OfficialCheckpointError,
                                      assign_entries, global_step, open_checkpoint, skip_rest)
from sagan_tf.official.sizes import infer_sizes

# TF-GAN's u is [K, 1] (the other side of W); it is converted and then refined.
TFGAN_POWER_ITERATIONS = 20
_SN_U_SUFFIX = "spectral_normalize/spectral_norm/spectral_norm_u"


def _is_embedding(sn):
  return isinstance(sn.layer, keras.layers.Embedding)


def _tfgan_u_name(kernel_name):
  # The custom getter opens `<kernel name>/spectral_normalize` inside the layer's
  # own scope, so the layer path appears twice.
  return f"{kernel_name.rsplit('/', 1)[0]}/{kernel_name}/{_SN_U_SUFFIX}"


def _tfgan_sn(kernel_name, sn, bias_name=None):
  entries = [MappedVariable(kernel_name, sn.kernel, tuple(sn.kernel.shape))]
  if bias_name is not None:
    entries.append(MappedVariable(bias_name, sn.layer.bias, tuple(sn.layer.bias.shape)))
  matrix_rows = (sn.kernel.shape[1] if _is_embedding(sn)
                 else int(np.prod(sn.kernel.shape[:-1])))
  u_name = (f"{kernel_name.rsplit('/', 1)[0]}/{_SN_U_SUFFIX}"
            if _is_embedding(sn) else _tfgan_u_name(kernel_name))
  entries.append(MappedVariable(u_name, sn.u, (matrix_rows, 1), sn_layer=sn))
  return entries


def _tfgan_conv(scope, sn):
  name = scope.rsplit("/", 1)[1]
  return _tfgan_sn(f"{scope}/{name}/kernel", sn, f"{scope}/{name}/bias")


def _tfgan_bn(scope, bn):
  # `tfgan.tpu.batch_norm`: [K, 1, 1, C] tables ([1, 1, 1, C] unconditional), [C] statistics.
  channels = tuple(bn.moving_mean.shape)
  table = (bn.gamma.shape[0], 1, 1) + channels if bn.num_classes > 0 else (1, 1, 1) + channels
  return [MappedVariable(f"{scope}/gamma", bn.gamma, table),
          MappedVariable(f"{scope}/beta", bn.beta, table),
          MappedVariable(f"{scope}/moving_mean", bn.moving_mean, channels),
          MappedVariable(f"{scope}/moving_variance", bn.moving_variance, channels)]


def _tfgan_attention(scope, attention):
  entries = []
  for name in ("theta", "phi", "g", "attn"):
    entries += _tfgan_sn(f"{scope}/sn_conv_{name}/weights", getattr(attention, name))
  entries.append(MappedVariable(f"{scope}/sigma_ratio", attention.gamma, ()))
  return entries


TFGAN_SCHEME = NameScheme(
    dense=lambda scope, sn: _tfgan_sn(f"{scope}/dense/kernel", sn, f"{scope}/dense/bias"),
    conv=_tfgan_conv,
    cbn=_tfgan_bn,
    bn=_tfgan_bn,
    attention=_tfgan_attention,
    embedding=lambda scope, sn: _tfgan_sn(f"{scope}/embedding_map", sn))


def tfgan_entries(generator, discriminator, g_prefix="Generator/generator/",
                  d_prefix="Discriminator/discriminator/"):
  """Every TF-GAN example checkpoint variable of the two models, as `MappedVariable`s.

  Names as official-sagan.md section 10 [T]: tf.layers kernels/biases under a
  doubled scope (`g_block1/snconv1/snconv1/kernel`), attention scopes
  `g_ops`/`d_ops` with `weights`, `g_snh0/dense`, `d_sn_linear/dense`,
  `tfgan.tpu.batch_norm` tables [K, 1, 1, C] (g_bn: [1, 1, 1, C]) and [C]
  moving statistics, and u vectors `[K, 1]` (the other side of W than ours).
  """
  return (generator_entries(generator, TFGAN_SCHEME, g_prefix, "g_ops") +
          discriminator_entries(discriminator, TFGAN_SCHEME, d_prefix, "d_ops"))


def _tfgan_names(g_prefix, d_prefix):
  return {
      "g_block_regex": rf"^{re.escape(g_prefix)}g_block(\d+)/",
      "g_dense": f"{g_prefix}g_snh0/dense/kernel",
      "g_last": f"{g_prefix}g_snconv_last/g_snconv_last/kernel",
      "d_first": f"{d_prefix}d_optimized_block1/sn_conv1/sn_conv1/kernel",
      "cbn_gamma": f"{g_prefix}g_block1/cbn_0/gamma",
      "conditional": lambda shape: len(shape) == 4 and shape[0] > 1,
      "embedding": f"{d_prefix}d_embedding/embedding_map",
      "g_theta": f"{g_prefix}g_ops/sn_conv_theta/weights",
      "d_theta": f"{d_prefix}d_ops/sn_conv_theta/weights",
  }


def _scope_prefix(shapes, suffix, default, path):
  matches = sorted(n[:-len(suffix)] for n in shapes if n.endswith(suffix))
  if default in matches or not matches:
    if not matches:
      raise OfficialCheckpointError(f"checkpoint {path} has no variable ending in {suffix}: "
                                    "not a TF-GAN SAGAN checkpoint")
    return default
  return matches[0]


def _l2n(x):
  return x / (np.sqrt(np.sum(np.square(x))) + 1e-12)


def _sn_matrix(sn_layer):
  """The SN layer's kernel as the float64 matrix W [rows, C_out] its u multiplies."""
  kernel = np.asarray(sn_layer.kernel, np.float64)
  return kernel.T if _is_embedding(sn_layer) else kernel.reshape(-1, kernel.shape[-1])


def estimate_u(sn_layer, u=None, iterations=TFGAN_POWER_ITERATIONS):
  """Sets an SN layer's u ([1, C_out]) by power iteration on its kernel; returns sigma.

  Args:
    sn_layer: a built `SpectralNormalization`.
    u: the start, [1, C_out]; None starts from the layer's current u.
    iterations: power iterations (the official one-per-call update, repeated).
  """
  w = _sn_matrix(sn_layer)
  u = np.asarray(sn_layer.u if u is None else u, np.float64).reshape(1, -1)
  v = _l2n(u @ w.T)
  for _ in range(iterations):
    v = _l2n(u @ w.T)
    u = _l2n(v @ w)
  sn_layer.u.assign(u.astype(np.float32))
  sigma = float((v @ w @ u.T).item())
  sn_layer.sigma.assign(sigma)
  return sigma


def _set_attention_relaxed(model, relaxed):
  # TF-GAN divides by max(1, sigma) everywhere except in the four attention
  # convs (`equality_constrained=True` there). SpectralNormalization reads
  # `relaxed` at call time, so the built layers can be switched in place;
  # sn_options keeps the attention layer's own config truthful.
  attention = model.attention
  attention.sn_options["relaxed"] = relaxed
  for conv in (attention.theta, attention.phi, attention.g, attention.attn):
    conv.relaxed = relaxed


def _transfer_u(u_entries, reader, shapes, path, report, power_iterations):
  """Sets each u from TF-GAN's left singular vector (or at random) and refines it."""
  fresh = 0
  for entry in u_entries:
    start = None
    if entry.name in shapes:
      if shapes[entry.name] != entry.shape:
        raise OfficialCheckpointError(
            f"checkpoint {path} has misshapen variable {entry.name} "
            f"(checkpoint {list(shapes[entry.name])}, expected {list(entry.shape)})")
      u_left = np.asarray(reader.get_tensor(entry.name), np.float64).reshape(1, -1)
      start = _l2n(u_left @ _sn_matrix(entry.sn_layer))
      report.assigned.append(entry.name)
    else:
      fresh += 1
    estimate_u(entry.sn_layer, start, power_iterations)
  report.notes.append(f"u re-estimated with {power_iterations} power iterations "
                      f"({fresh} from a random start)")


def load_tfgan(checkpoint_path, *, power_iterations=TFGAN_POWER_ITERATIONS, strict=True):
  """Builds our models from a TF-GAN `self_attention_estimator` checkpoint.

  The models get TF-GAN's semantics (official-sagan.md sections 0, 4, 5):
  batch-norm eps 1e-3 and decay 0.999 (also for g_bn, no Bessel correction),
  spectral norm divided by max(1, sigma) except in the attention convs,
  u and v under stop_gradient (`sn_gradient="stop"`). CBN tables [K, 1, 1, C]
  become [K, C]. TF-GAN's u estimates the left singular vector ([K, 1]) and
  ours the right one ([1, C_out]): ours starts at l2n(u_T^T W) (random when
  the checkpoint has no u) and is refined by `power_iterations` iterations.

  Args:
    checkpoint_path: a checkpoint prefix, one of its files or its directory.
    power_iterations: power iterations per u after the transfer.
    strict: raise on checkpoint variables that are neither used nor known
      bookkeeping (optimiser slots, beta powers, step counters).

  Returns:
    A `LoadedModels` (no optimisers). Its `model_config` has the sizes and
    the BN / gradient settings; `ModelConfig` has no field for the relaxed
    spectral norm, so `build_from_config` of it is not TF-GAN's model.

  Raises:
    OfficialCheckpointError: unreadable checkpoint, or a missing or misshapen
      variable (named in the message).
  """
  path, reader, shapes = open_checkpoint(checkpoint_path)
  g_prefix = _scope_prefix(shapes, "g_snh0/dense/kernel", "Generator/generator/", path)
  d_prefix = _scope_prefix(shapes, "d_sn_linear/dense/kernel", "Discriminator/discriminator/",
                           path)
  sizes = infer_sizes(shapes, path, _tfgan_names(g_prefix, d_prefix))
  generator, discriminator = build_sagan(
      sizes["image_size"], sizes["num_classes"], sizes["g_width"], sizes["z_dim"],
      d_width=sizes["d_width"], sn_gradient="stop", sn_relaxed=True, bn_epsilon=1e-3,
      cbn_momentum=0.999, g_bn_momentum=0.999, g_bn_bessel=False,
      g_attention_resolution=sizes["g_attention_resolution"],
      d_attention_resolution=sizes["d_attention_resolution"])
  _set_attention_relaxed(generator, False)
  _set_attention_relaxed(discriminator, False)
  report = LoadReport(path)
  entries = tfgan_entries(generator, discriminator, g_prefix, d_prefix)
  assign_entries([e for e in entries if not e.is_u], reader, shapes, path, report)
  _transfer_u([e for e in entries if e.is_u], reader, shapes, path, report, power_iterations)
  skip_rest(shapes, report, False, strict, path)
  config = dataclasses.replace(presets.official().model, sn_gradient="stop", bn_epsilon=1e-3,
                               g_bn_momentum=0.999, g_bn_bessel=False, **sizes)
  logging.info("%s", report.summary().splitlines()[0])
  return LoadedModels(generator, discriminator, None, None, config, report,
                      global_step(reader, shapes))
