"""Loading, converting and checking checkpoints of the official TF1 SAGAN and of TF-GAN's example.

  python -m sagan_tf.official --checkpoint=PATH [--model_dir=DIR] [--verify=expected.npz]
      [--restore_optimizer]

The official code (brain-research/self-attention-gan) writes name-based TF1
checkpoints (`model/g_block1/snconv1/w`, ...). `load_official` reads one with
`tf.train.load_checkpoint`, infers the model sizes from the variable shapes,
builds our models with the official semantics and assigns every variable;
`verify_official` checks the conversion, and one training step of
`sagan_tf.training.step.TrainStep` (the step train.py runs) from it, against
values recorded from the official code. `load_tfgan` does the same for
TF-GAN's `self_attention_estimator` example. See docs/official_parity.md.
"""

import dataclasses
import math
import os
import re
import sys
import zipfile

if __name__ == "__main__":
  # Run as a program: keep TensorFlow's log lines off the console; before it is imported.
  from sagan_tf import console  # pylint: disable=g-import-not-at-top
  console.setup()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from sagan_tf import losses
from sagan_tf.configs import presets
from sagan_tf.models.architectures import ARCHITECTURES, get_architecture
from sagan_tf.models.build import build_from_config, build_sagan
from sagan_tf.training.optimizers import dense_gradients, make_optimizers
from sagan_tf.training.step import TrainStep

OFFICIAL_PREFIX = "model/"
# TF1 bookkeeping that has no counterpart in the models: Adam's bias-correction
# powers (D's optimiser, built first, got the unsuffixed pair) and step counters.
D_BETA_POWERS = ("beta1_power", "beta2_power")
G_BETA_POWERS = ("beta1_power_1", "beta2_power_1")
COUNTERS = ("global_step", "d_step", "g_step")
# The official model.py / TF-GAN hyper-parameters (official-sagan.md section 7).
G_LEARNING_RATE = 1e-4
D_LEARNING_RATE = 4e-4
ADAM_BETA_1 = 0.0
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-8
# TF-GAN's u is [K, 1] (the other side of W); it is converted and then refined.
TFGAN_POWER_ITERATIONS = 20
_SN_U_SUFFIX = "spectral_normalize/spectral_norm/spectral_norm_u"


class OfficialCheckpointError(ValueError):
  """A checkpoint that is unreadable or does not match the models."""


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


@dataclasses.dataclass
class LoadReport:
  """What a loader did with each checkpoint variable.

  Attributes:
    checkpoint: the checkpoint path read.
    assigned: checkpoint names copied into model (or optimiser) variables.
    skipped: checkpoint name -> why it was deliberately not used.
    notes: other facts worth logging (iteration counts, re-estimated u).
  """
  checkpoint: str
  assigned: list = dataclasses.field(default_factory=list)
  skipped: dict = dataclasses.field(default_factory=dict)
  notes: list = dataclasses.field(default_factory=list)

  def summary(self):
    reasons = {}
    for reason in self.skipped.values():
      reasons[reason] = reasons.get(reason, 0) + 1
    lines = [f"{self.checkpoint}: assigned {len(self.assigned)} variables, skipped "
             f"{len(self.skipped)}"]
    lines += [f"  skipped {count}: {reason}" for reason, count in sorted(reasons.items())]
    lines += [f"  {note}" for note in self.notes]
    return "\n".join(lines)


class LoadedModels(tuple):
  """(generator, discriminator), with the optimisers, config and report as attributes.

  Unpacks as a pair: `generator, discriminator = load_official(path)`.

  Attributes:
    generator, discriminator: the built, loaded models.
    g_optimizer, d_optimizer: Keras Adam optimisers with the restored slots
      and iteration counts, or None when the slots were not restored.
    model_config: the inferred `ModelConfig`.
    report: the `LoadReport`.
    step: the checkpoint's global step (0 when it has none).
  """

  def __new__(cls, generator, discriminator, g_optimizer=None, d_optimizer=None,
              model_config=None, report=None, step=0):
    loaded = super().__new__(cls, (generator, discriminator))
    loaded.generator, loaded.discriminator = generator, discriminator
    loaded.g_optimizer, loaded.d_optimizer = g_optimizer, d_optimizer
    loaded.model_config, loaded.report, loaded.step = model_config, report, step
    return loaded


# ----------------------------------------------------------------------------
# Name maps, built by walking the models.


def _sn_entries(scope, sn, kernel_name, bias_name):
  entries = [MappedVariable(f"{scope}/{kernel_name}", sn.kernel, tuple(sn.kernel.shape))]
  if not isinstance(sn.layer, keras.layers.Embedding) and sn.layer.use_bias:
    bias = sn.layer.bias
    entries.append(MappedVariable(f"{scope}/{bias_name}", bias, tuple(bias.shape)))
  entries.append(MappedVariable(f"{scope}/u", sn.u, tuple(sn.u.shape), sn_layer=sn))
  return entries


def _official_conv(scope, sn):
  return _sn_entries(scope, sn, "w", "biases")


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


def official_generator_entries(generator, prefix=OFFICIAL_PREFIX):
  """The generator's official checkpoint variables, in the official creation order."""
  entries = _sn_entries(f"{prefix}g_snh0", generator.g_snh0, "Matrix", "bias")
  for index, block in enumerate(generator.blocks):
    scope = f"{prefix}{block.name}"
    entries += _official_cbn(f"{scope}/cbn_0", block.cbn_0)
    entries += _official_conv(f"{scope}/snconv1", block.snconv1)
    entries += _official_cbn(f"{scope}/cbn_1", block.cbn_1)
    entries += _official_conv(f"{scope}/snconv2", block.snconv2)
    entries += _official_conv(f"{scope}/snconv3", block.snconv3)
    if index == generator._attention_after:  # pylint: disable=protected-access
      entries += _official_attention(f"{prefix}{generator.attention.name}", generator.attention)
  entries += _official_bn(f"{prefix}g_bn", generator.g_bn)
  entries += _official_conv(f"{prefix}g_snconv_last", generator.g_snconv_last)
  return entries


def official_discriminator_entries(discriminator, prefix=OFFICIAL_PREFIX):
  """The discriminator's official checkpoint variables, in the official creation order."""
  entries = []
  for index, block in enumerate(discriminator.blocks):
    scope = f"{prefix}{block.name}"
    entries += _official_conv(f"{scope}/sn_conv1", block.sn_conv1)
    entries += _official_conv(f"{scope}/sn_conv2", block.sn_conv2)
    if block.learnable_shortcut:
      entries += _official_conv(f"{scope}/sn_conv3", block.sn_conv3)
    if index == discriminator._attention_after:  # pylint: disable=protected-access
      entries += _official_attention(f"{prefix}{discriminator.attention.name}",
                                     discriminator.attention)
  entries += _sn_entries(f"{prefix}d_sn_linear", discriminator.d_sn_linear, "Matrix", "bias")
  if discriminator.d_embedding is not None:
    entries += _sn_entries(f"{prefix}d_embedding", discriminator.d_embedding, "embedding_map", None)
  return entries


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


# ----------------------------------------------------------------------------
# Reading checkpoints.


def _checkpoint_prefix(path):
  # A `.index` or `.data-*` file name opens as an empty reader; use its prefix.
  return re.sub(r"\.(index|data-\d+-of-\d+)$", "", os.fspath(path))


def _open_checkpoint(path):
  path = _checkpoint_prefix(path)
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as error:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise OfficialCheckpointError(f"cannot read checkpoint {path}: {first}") from None
  shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
  shapes.pop("_CHECKPOINTABLE_OBJECT_GRAPH", None)
  if not shapes:
    raise OfficialCheckpointError(f"checkpoint {path} holds no variables")
  return path, reader, shapes


def _shape(shapes, name, path):
  if name not in shapes:
    raise OfficialCheckpointError(f"checkpoint {path} has no variable {name}")
  return shapes[name]


def _attention_resolution(channels, block_channels, block_resolutions, default, where):
  """The feature-map size whose block output has `channels` channels (the default if it fits)."""
  candidates = [r for c, r in zip(block_channels, block_resolutions) if c == channels]
  if default in candidates or not candidates:
    if not candidates:
      raise OfficialCheckpointError(f"{where}: no block outputs {channels} channels")
    return default
  return candidates[0]


def _infer_sizes(shapes, path, names):
  """image_size, num_classes, widths, z_dim and attention positions from variable shapes.

  `names` gives the naming scheme: a dict of callables / strings for the
  generator's dense kernel, block scope, last conv kernel, first D conv
  kernel, attention theta kernels, CBN gamma and the embedding.
  """
  block_pattern = re.compile(names["g_block_regex"])
  block_numbers = sorted({int(m.group(1)) for n in shapes for m in [block_pattern.match(n)] if m})
  if not block_numbers:
    raise OfficialCheckpointError(f"checkpoint {path} has no generator blocks "
                                  f"({names['g_block_regex']}): not a SAGAN checkpoint")
  image_size = 4 * 2 ** len(block_numbers)
  if image_size not in ARCHITECTURES:
    raise OfficialCheckpointError(
        f"checkpoint {path}: {len(block_numbers)} generator blocks give {image_size} pixels, "
        f"which has no architecture (supported: {sorted(ARCHITECTURES)})")
  architecture = get_architecture(image_size)
  z_dim, h0_units = _shape(shapes, names["g_dense"], path)
  last = _shape(shapes, names["g_last"], path)
  g_width = last[2] // architecture.g_channels[-1]
  if h0_units != 16 * g_width * architecture.g_channels[0]:
    raise OfficialCheckpointError(
        f"checkpoint {path}: {names['g_dense']} has {h0_units} outputs, expected "
        f"{16 * g_width * architecture.g_channels[0]} for generator width {g_width}")
  d_first = _shape(shapes, names["d_first"], path)
  d_width = d_first[3] // architecture.d_channels[0]
  gamma = _shape(shapes, names["cbn_gamma"], path)
  num_classes = gamma[0] if len(gamma) > 1 and names["conditional"](gamma) else 0
  if num_classes and names["embedding"] in shapes and shapes[names["embedding"]][0] != num_classes:
    raise OfficialCheckpointError(
        f"checkpoint {path}: {names['embedding']} has {shapes[names['embedding']][0]} rows but "
        f"the generator's batch norms have {num_classes} classes")
  g_channels = [m * g_width for m in architecture.g_channels[1:]]
  g_resolutions = [8 * 2 ** i for i in range(len(g_channels))]
  g_attention = _attention_resolution(
      _shape(shapes, names["g_theta"], path)[2], g_channels, g_resolutions,
      architecture.attention_resolution, names["g_theta"])
  d_channels = [m * d_width for m in architecture.d_channels]
  d_resolutions, resolution = [], image_size
  for down in architecture.d_downsample:
    resolution = resolution // 2 if down else resolution
    d_resolutions.append(resolution)
  d_attention = _attention_resolution(
      _shape(shapes, names["d_theta"], path)[2], d_channels, d_resolutions,
      architecture.attention_resolution, names["d_theta"])
  return dict(image_size=image_size, num_classes=int(num_classes), g_width=int(g_width),
              d_width=int(d_width), z_dim=int(z_dim),
              g_attention_resolution=0 if g_attention == architecture.attention_resolution
              else int(g_attention),
              d_attention_resolution=0 if d_attention == architecture.attention_resolution
              else int(d_attention))


_OFFICIAL_NAMES = {
    "g_block_regex": r"^model/g_block(\d+)/",
    "g_dense": "model/g_snh0/Matrix",
    "g_last": "model/g_snconv_last/w",
    "d_first": "model/d_optimized_block1/sn_conv1/w",
    "cbn_gamma": "model/g_block1/cbn_0/gamma",
    "conditional": lambda shape: len(shape) == 2,
    "embedding": "model/d_embedding/embedding_map",
    "g_theta": "model/g_non_local/sn_conv_theta/w",
    "d_theta": "model/d_non_local/sn_conv_theta/w",
}


def official_model_config(checkpoint_path, sn_gradient="official"):
  """The `ModelConfig` of an official checkpoint: its sizes, the official semantics.

  Sizes come from shapes: z_dim and the generator width from
  `g_snh0/Matrix` and `g_snconv_last/w`, the image size from the number of
  `g_block`s (4 * 2^n), the discriminator width from its first conv, the
  classes from the CBN tables (checked against `d_embedding`). Semantics are
  the `official()` preset's: eps 1e-5, decays 0.999 / 0.9999, Bessel-corrected
  g_bn moving variance, `sn_gradient="official"`.

  Raises:
    OfficialCheckpointError: unreadable checkpoint or missing key variables.
  """
  path, _, shapes = _open_checkpoint(checkpoint_path)
  sizes = _infer_sizes(shapes, path, _OFFICIAL_NAMES)
  return dataclasses.replace(presets.official().model, sn_gradient=sn_gradient, **sizes)


def make_official_optimizers():
  """(G, D) Keras Adam as the official code: lr 1e-4 / 4e-4, betas (0, 0.999), eps 1e-8."""
  return (keras.optimizers.Adam(G_LEARNING_RATE, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2,
                                epsilon=ADAM_EPSILON, name="g_adam"),
          keras.optimizers.Adam(D_LEARNING_RATE, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2,
                                epsilon=ADAM_EPSILON, name="d_adam"))


def adam_slots(optimizer, variable):
  """(m, v) of `variable` in a built Keras Adam."""
  # Keras 3 has no public slot accessor; these are the lists Adam.build fills.
  # pylint: disable=protected-access
  index = optimizer._get_variable_index(variable)
  return optimizer._momentums[index], optimizer._velocities[index]


def _adam_iterations(reader, shapes, power_name, counter_name, report):
  """Keras `iterations` (updates done) from TF1's stored beta2 power.

  TF1 stores beta2^(t+1) after t updates (the power starts at beta2 and is
  multiplied after each update), while Keras' Adam uses
  beta2^(iterations+1): iterations = round(log(power) / log(beta2)) - 1.
  The float32 power drifts by about t * 6e-8 relative, so for large t the
  estimate can be off by a few steps (the bias correction is ~1 there
  anyway); the exact `g_step` / `d_step` counter is preferred when it agrees
  within that drift, and used alone when the power has underflowed.
  """
  power = float(reader.get_tensor(power_name)) if power_name in shapes else 0.0
  estimate = None
  if power > 1e-30:
    estimate = max(int(round(math.log(power) / math.log(ADAM_BETA_2))) - 1, 0)
  counter = int(reader.get_tensor(counter_name)) if counter_name in shapes else None
  if estimate is not None and counter is not None:
    if abs(counter - estimate) <= max(1, 1e-4 * counter):
      report.notes.append(f"{power_name} = {power:.8g} and {counter_name} = {counter}: "
                          f"iterations {counter}")
      return counter
    logging.warning("%s = %.8g gives %d Adam updates but %s = %d; using %d", power_name, power,
                    estimate, counter_name, counter, estimate)
  if estimate is not None:
    report.notes.append(f"{power_name} = {power:.8g}: iterations {estimate}")
    return estimate
  if counter is not None:
    report.notes.append(f"{power_name} underflowed: iterations from {counter_name} = {counter}")
    return counter
  raise OfficialCheckpointError(f"cannot tell the Adam step: no usable {power_name} and no "
                                f"{counter_name} in the checkpoint")


def _describe(names, limit=5):
  shown = ", ".join(names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _assign_entries(entries, reader, shapes, path, report):
  missing = [e.name for e in entries if e.name not in shapes]
  if missing:
    raise OfficialCheckpointError(f"checkpoint {path} lacks {len(missing)} variable(s) the model "
                                  f"needs: {_describe(missing)}")
  wrong = [f"{e.name} (checkpoint {list(shapes[e.name])}, expected {list(e.shape)})"
           for e in entries if shapes[e.name] != e.shape]
  if wrong:
    raise OfficialCheckpointError(
        f"checkpoint {path} has misshapen variable(s): {_describe(wrong)}")
  for entry in entries:
    value = np.asarray(reader.get_tensor(entry.name))
    entry.variable.assign(value.reshape(entry.variable.shape).astype(entry.variable.dtype))
    report.assigned.append(entry.name)


def _restore_slots(optimizer, model, entries, reader, shapes, path, report):
  trainable = [e for e in entries if e.variable.trainable]
  names = [f"{e.name}/{slot}" for e in trainable for slot in ("Adam", "Adam_1")]
  missing = [n for n in names if n not in shapes]
  if missing:
    raise OfficialCheckpointError(f"checkpoint {path} lacks {len(missing)} Adam slot(s): "
                                  f"{_describe(missing)}")
  # The model's own order, as the trainer builds it: object-based checkpoints
  # of the optimiser match slots by position.
  optimizer.build(model.trainable_variables)
  for entry in trainable:
    for slot_name, slot in zip(("Adam", "Adam_1"), adam_slots(optimizer, entry.variable)):
      name = f"{entry.name}/{slot_name}"
      if shapes[name] != entry.shape:
        raise OfficialCheckpointError(
            f"checkpoint {path} has misshapen variable {name} "
            f"(checkpoint {list(shapes[name])}, expected {list(entry.shape)})")
      slot.assign(np.asarray(reader.get_tensor(name)).reshape(slot.shape))
      report.assigned.append(name)


def _skip_rest(shapes, report, restore_optimizer_slots, strict, path):
  unexpected = []
  for name in sorted(shapes):
    if name in report.assigned:
      continue
    if name.endswith("/Adam") or name.endswith("/Adam_1"):
      report.skipped[name] = "Adam slot (pass restore_optimizer_slots=True to restore)"
    elif name in D_BETA_POWERS + G_BETA_POWERS:
      report.skipped[name] = ("Adam beta power (restored as the optimiser's iterations)"
                              if restore_optimizer_slots else "Adam beta power")
    elif name in COUNTERS:
      report.skipped[name] = "step counter"
    else:
      unexpected.append(name)
  if unexpected:
    message = (f"checkpoint {path} has {len(unexpected)} variable(s) the models do not use: "
               f"{_describe(unexpected)}")
    if strict:
      raise OfficialCheckpointError(message + " (strict=False ignores them)")
    logging.warning(message)
    for name in unexpected:
      report.skipped[name] = "not a variable of these models"


def load_official(checkpoint_path, *, restore_optimizer_slots=False, sn_gradient="official",
                  strict=True):
  """Builds our models from an official TF1 SAGAN checkpoint.

  Every checkpoint variable is used or deliberately skipped (Adam slots unless
  restored, beta powers, `global_step` / `d_step` / `g_step`); the report
  says which. The models get the official semantics (`official_model_config`).

  Args:
    checkpoint_path: a checkpoint prefix (`.../model.ckpt-1`), one of its
      files, or a directory with a `checkpoint` file.
    restore_optimizer_slots: also build Keras Adam optimisers with the
      official hyper-parameters and restore m (`/Adam`), v (`/Adam_1`) and the
      iteration count from `beta2_power` (D) and `beta2_power_1` (G).
    sn_gradient: spectral-norm gradient mode of the built models; "official"
      reproduces the TF1 gradients, "autodiff" is plain autodiff.
    strict: raise on checkpoint variables that are neither used nor known
      bookkeeping; False logs and reports them.

  Returns:
    A `LoadedModels`: unpacks as (generator, discriminator); has
    `g_optimizer`, `d_optimizer` (None without slots), `model_config`,
    `report` and `step`.

  Raises:
    OfficialCheckpointError: unreadable checkpoint, a missing or misshapen
      variable (named in the message), or unexpected variables when strict.
  """
  path, reader, shapes = _open_checkpoint(checkpoint_path)
  model_config = dataclasses.replace(presets.official().model, sn_gradient=sn_gradient,
                                     **_infer_sizes(shapes, path, _OFFICIAL_NAMES))
  generator, discriminator = build_from_config(model_config)
  report = LoadReport(path)
  g_entries = official_generator_entries(generator)
  d_entries = official_discriminator_entries(discriminator)
  _assign_entries(g_entries + d_entries, reader, shapes, path, report)
  g_optimizer = d_optimizer = None
  if restore_optimizer_slots:
    g_optimizer, d_optimizer = make_official_optimizers()
    _restore_slots(g_optimizer, generator, g_entries, reader, shapes, path, report)
    _restore_slots(d_optimizer, discriminator, d_entries, reader, shapes, path, report)
    g_optimizer.iterations.assign(
        _adam_iterations(reader, shapes, G_BETA_POWERS[1], "g_step", report))
    d_optimizer.iterations.assign(
        _adam_iterations(reader, shapes, D_BETA_POWERS[1], "d_step", report))
  _skip_rest(shapes, report, restore_optimizer_slots, strict, path)
  step = int(reader.get_tensor("global_step")) if "global_step" in shapes else 0
  logging.info("%s", report.summary().splitlines()[0])
  return LoadedModels(generator, discriminator, g_optimizer, d_optimizer, model_config, report,
                      step)


def write_checkpoint(prefix, values):
  """Writes {name: array} as a name-based (TF1-style) checkpoint at `prefix`; returns it.

  The result reads with `tf.train.load_checkpoint` and TF1 `Saver.restore`.
  """
  directory = os.path.dirname(prefix)
  if directory:
    tf.io.gfile.makedirs(directory)
  names = sorted(values)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=[tf.convert_to_tensor(values[name]) for name in names])
  return prefix


def official_checkpoint_values(generator, discriminator, *, g_optimizer=None, d_optimizer=None,
                               step=None):
  """{official name: array} of our models (and optimisers), as the official code would save them.

  With optimisers, adds `<name>/Adam`, `<name>/Adam_1` and the beta powers
  beta^(iterations+1) (`beta*_power` for D, `beta*_power_1` for G); with
  `step`, `global_step` = step and the `g_step` / `d_step` counters (the
  optimisers' iterations, or step without them).
  """
  values = {}
  g_entries = official_generator_entries(generator)
  d_entries = official_discriminator_entries(discriminator)
  for entry in g_entries + d_entries:
    values[entry.name] = np.asarray(entry.variable).reshape(entry.shape)
  for optimizer, entries, powers in ((g_optimizer, g_entries, G_BETA_POWERS),
                                     (d_optimizer, d_entries, D_BETA_POWERS)):
    if optimizer is None:
      continue
    for entry in entries:
      if entry.variable.trainable:
        m, v = adam_slots(optimizer, entry.variable)
        values[f"{entry.name}/Adam"] = np.asarray(m).reshape(entry.shape)
        values[f"{entry.name}/Adam_1"] = np.asarray(v).reshape(entry.shape)
    updates = int(optimizer.iterations.numpy())
    values[powers[0]] = np.float32(float(optimizer.beta_1) ** (updates + 1))
    values[powers[1]] = np.float32(float(optimizer.beta_2) ** (updates + 1))
  if step is not None:
    values["global_step"] = np.int64(step)
    for counter, optimizer in (("g_step", g_optimizer), ("d_step", d_optimizer)):
      values[counter] = np.int32(step if optimizer is None else optimizer.iterations.numpy())
  return values


def save_official(generator, discriminator, prefix, *, g_optimizer=None, d_optimizer=None,
                  step=None):
  """Saves our models in the official TF1 checkpoint format; returns the prefix."""
  return write_checkpoint(prefix, official_checkpoint_values(
      generator, discriminator, g_optimizer=g_optimizer, d_optimizer=d_optimizer, step=step))


# ----------------------------------------------------------------------------
# Checking against recorded official values.


def reference_run(generator, discriminator, z, labels, real):
  """The fixture's run 2: forward values, losses, gradients and u after one training-mode pass.

  G runs in training mode (writes G's u once, and, unlike the official
  fetch-only run, also moves G's BN statistics), D once on [real, fake] in
  training mode. Keys follow expected.npz: g_train, d_real, d_fake, d_loss,
  d_loss_real, d_loss_fake, g_loss, grad_d/<name>, grad_g/<name>,
  u_after/<name> (official names).
  """
  names = {id(e.variable): e.name for e in official_entries(generator, discriminator)}
  labels = tf.cast(labels, tf.int32)
  batch = real.shape[0]
  with tf.GradientTape(persistent=True) as tape:
    fake = generator(z, labels, training=True)
    logits = discriminator(tf.concat([real, fake], 0), tf.concat([labels, labels], 0),
                           training=True)
    d_real, d_fake = logits[:batch], logits[batch:]
    d_loss, d_loss_real, d_loss_fake = losses.discriminator_hinge_loss(d_real, d_fake)
    g_loss = losses.generator_hinge_loss(d_fake)
  out = {"g_train": fake, "d_real": d_real[:, None], "d_fake": d_fake[:, None], "d_loss": d_loss,
         "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake, "g_loss": g_loss}
  for prefix, loss, model in (("grad_d", d_loss, discriminator), ("grad_g", g_loss, generator)):
    variables = model.trainable_variables
    for variable, gradient in zip(variables, dense_gradients(tape.gradient(loss, variables))):
      name = names[id(variable)]
      out[f"{prefix}/{name}"] = np.zeros(variable.shape) if gradient is None else gradient
  del tape
  for entry in official_entries(generator, discriminator):
    if entry.is_u:
      out[f"u_after/{entry.name}"] = entry.variable
  return {k: np.asarray(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One compared quantity: largest abs error, relative L2 error, and the verdict."""
  quantity: str
  max_abs: float
  rel_l2: float
  criterion: str
  tolerance: float

  @property
  def passed(self):
    value = self.rel_l2 if self.criterion == "rel_l2" else self.max_abs
    return bool(value <= self.tolerance)


def near_zero_gradient(name):
  """G conv biases followed by a batch norm: their true gradient is ~0 (float noise)."""
  return (name.startswith(f"grad_g/{OFFICIAL_PREFIX}g_") and name.endswith("/biases")
          and "g_snconv_last" not in name)


OUTPUT_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-2
# Absolute floor for the near-zero G bias gradients: float noise, <= 3.3e-7 in
# the fixture against ~1e-2 for the other G gradients.
BIAS_GRADIENT_FLOOR = 1e-5
STEP_TOLERANCE = 5e-4
# u is a unit vector; the fixture's float floor is ~1e-7.
U_TOLERANCE = 1e-5


def compare(quantity, ours, expected, criterion="max_abs", tolerance=OUTPUT_TOLERANCE):
  """A `Comparison` of two arrays."""
  ours = np.asarray(ours, np.float64).reshape(np.shape(expected))
  expected = np.asarray(expected, np.float64)
  diff = ours - expected
  max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
  norm = float(np.linalg.norm(expected))
  rel_l2 = float(np.linalg.norm(diff) / norm) if norm > 0 else (0.0 if max_abs == 0 else math.inf)
  return Comparison(quantity, max_abs, rel_l2, criterion, tolerance)


def verify_official(checkpoint_path, expected, *, sn_gradient="official", gradient_prefix="grad",
                    step2=True):
  """Compares our conversion of an official checkpoint with recorded official values.

  Reproduces the fixture's runs (official_parity/small/README.md): eval-mode G
  on (z2, labels2) from the checkpoint; one training-mode pass on (z2,
  labels2, real2) with all gradients and the u written; and, when `step2`
  and the checkpoint has Adam slots, a full official step on (z3, labels3,
  real3) from a fresh load with the slots restored.

  Args:
    checkpoint_path: the official checkpoint.
    expected: a mapping such as `np.load("expected.npz")`.
    sn_gradient: "official" matches `grad_*`; "autodiff" matches the
      snapshot gradients of expected_snapshot.npz.
    gradient_prefix: "grad" (expected.npz) or "grad_snapshot": the gradient
      keys are `grad_d/...` or `grad_d_snapshot/...`.
    step2: also run and compare the second training step.

  Returns:
    A list of `Comparison`, one per quantity / variable.
  """
  results = []
  generator, discriminator = load_official(checkpoint_path, sn_gradient=sn_gradient)
  g_eval = generator(np.asarray(expected["z2"]), np.asarray(expected["labels2"], np.int32),
                     training=False)
  results.append(compare("g_eval", g_eval, expected["g_eval"]))
  run = reference_run(generator, discriminator, np.asarray(expected["z2"]),
                      np.asarray(expected["labels2"]), np.asarray(expected["real2"]))
  for key in ("g_train", "d_real", "d_fake", "d_loss", "d_loss_real", "d_loss_fake", "g_loss"):
    results.append(compare(key, run[key], expected[key]))
  suffix = "" if gradient_prefix == "grad" else gradient_prefix[len("grad"):]
  for key in sorted(k for k in run if k.startswith("grad_")):
    net, name = key.split("/", 1)
    expected_key = f"{net}{suffix}/{name}"
    if near_zero_gradient(key):
      results.append(compare(key, run[key], expected[expected_key], "max_abs", BIAS_GRADIENT_FLOOR))
    else:
      results.append(compare(key, run[key], expected[expected_key], "rel_l2", GRADIENT_TOLERANCE))
  for key in sorted(k for k in run if k.startswith("u_after/")):
    results.append(compare(key, run[key], expected[key], "max_abs", U_TOLERANCE))
  if step2:
    results += verify_step2(checkpoint_path, expected, sn_gradient=sn_gradient,
                            prefix="step2" if gradient_prefix == "grad" else "step2_snapshot")
  return results


def official_step(loaded, z, labels, real):
  """One step of our `TrainStep` with the official preset, fed fixed inputs: returns its metrics.

  The preset's order is the official one (G update, then D update, one each).
  Both updates get `z` and `labels`, and D's real batch is (real, labels), as
  the fixture feeds one z and one label array to both train ops.
  """
  strategy = tf.distribute.get_strategy()
  z = tf.constant(z, tf.float32)
  labels = tf.constant(labels, tf.int32)
  step = tf.Variable(loaded.step, dtype=tf.int64, trainable=False, name="step")
  train_step = TrainStep(loaded.generator, loaded.discriminator, loaded.g_optimizer,
                         loaded.d_optimizer, strategy, presets.official().train,
                         tf.random.Generator.from_seed(0), step, noise_fn=lambda batch: (z, labels))
  batches = tf.data.Dataset.from_tensors((tf.constant(real, tf.float32), labels)).repeat()
  return {k: v.numpy() for k, v in train_step.loop(iter(batches), tf.constant(1)).items()}


def verify_step2(checkpoint_path, expected, *, sn_gradient="official", prefix="step2"):
  """Runs the second official step from the checkpoint through `TrainStep`; compares every variable."""
  loaded = load_official(checkpoint_path, restore_optimizer_slots=True, sn_gradient=sn_gradient)
  generator, discriminator = loaded
  step_losses = official_step(loaded, expected["z3"], expected["labels3"], expected["real3"])
  results = [compare(f"{prefix}_g_loss", step_losses["g_loss"], expected[f"{prefix}_g_loss"]),
             compare(f"{prefix}_d_loss", step_losses["d_loss"], expected[f"{prefix}_d_loss"])]
  for entry in official_entries(generator, discriminator):
    key = f"{prefix}/{entry.name}"
    results.append(compare(key, entry.variable, expected[key], "max_abs", STEP_TOLERANCE))
  for opt, power in ((loaded.g_optimizer, G_BETA_POWERS[1]),
                     (loaded.d_optimizer, D_BETA_POWERS[1])):
    key = f"{prefix}/{power}"
    if key in expected:
      ours = ADAM_BETA_2 ** (int(opt.iterations.numpy()) + 1)
      results.append(compare(key, ours, expected[key], "max_abs", 1e-6))
  return results


def format_comparisons(results, verbose=False):
  """A table: per quantity group, the largest abs and relative L2 errors and the verdict."""
  groups = {}
  for result in results:
    head = result.quantity.split("/", 1)[0]
    if head.startswith("grad_") and near_zero_gradient(result.quantity):
      head += " (G biases, abs)"
    groups.setdefault(head, []).append(result)
  lines = [f"{'quantity':<34} {'n':>4} {'max abs err':>12} {'max rel L2':>11}  tolerance"]
  for head, group in groups.items():
    worst = max(group, key=lambda r: r.max_abs)
    ok = all(r.passed for r in group)
    tolerance = f"{group[0].criterion} <= {group[0].tolerance:g}"
    lines.append(f"{head:<34} {len(group):>4} {worst.max_abs:>12.3e} "
                 f"{max(r.rel_l2 for r in group):>11.3e}  {tolerance}  {'ok' if ok else 'FAIL'}")
    for result in group:
      if verbose or not result.passed:
        lines.append(f"    {result.quantity:<70} {result.max_abs:.3e} {result.rel_l2:.3e}"
                     f"{'' if result.passed else '  FAIL'}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# TF-GAN's self_attention_estimator example.


def _tfgan_u_name(kernel_name):
  # The custom getter opens `<kernel name>/spectral_normalize` inside the layer's
  # own scope, so the layer path appears twice.
  return f"{kernel_name.rsplit('/', 1)[0]}/{kernel_name}/{_SN_U_SUFFIX}"


def _tfgan_sn(kernel_name, sn, bias_name=None):
  entries = [MappedVariable(kernel_name, sn.kernel, tuple(sn.kernel.shape))]
  if bias_name is not None:
    entries.append(MappedVariable(bias_name, sn.layer.bias, tuple(sn.layer.bias.shape)))
  matrix_rows = (sn.kernel.shape[1] if isinstance(sn.layer, keras.layers.Embedding)
                 else int(np.prod(sn.kernel.shape[:-1])))
  u_name = (f"{kernel_name.rsplit('/', 1)[0]}/{_SN_U_SUFFIX}"
            if isinstance(sn.layer, keras.layers.Embedding) else _tfgan_u_name(kernel_name))
  entries.append(MappedVariable(u_name, sn.u, (matrix_rows, 1), sn_layer=sn))
  return entries


def _tfgan_conv(scope, sn):
  name = scope.rsplit("/", 1)[1]
  return _tfgan_sn(f"{scope}/{name}/kernel", sn, f"{scope}/{name}/bias")


def _tfgan_bn(scope, bn, conditional):
  channels = tuple(bn.moving_mean.shape)
  table = (bn.gamma.shape[0], 1, 1) + channels if conditional else (1, 1, 1) + channels
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


def tfgan_entries(generator, discriminator, g_prefix="Generator/generator/",
                  d_prefix="Discriminator/discriminator/"):
  """Every TF-GAN example checkpoint variable of the two models, as `MappedVariable`s.

  Names as official-sagan.md section 10 [T]: tf.layers kernels/biases under a
  doubled scope (`g_block1/snconv1/snconv1/kernel`), attention scopes
  `g_ops`/`d_ops` with `weights`, `g_snh0/dense`, `d_sn_linear/dense`,
  `tfgan.tpu.batch_norm` tables [K, 1, 1, C] (g_bn: [1, 1, 1, C]) and [C]
  moving statistics, and u vectors `[K, 1]` (the other side of W than ours).
  """
  conditional = generator.num_classes > 0
  entries = _tfgan_sn(f"{g_prefix}g_snh0/dense/kernel", generator.g_snh0,
                      f"{g_prefix}g_snh0/dense/bias")
  for index, block in enumerate(generator.blocks):
    scope = f"{g_prefix}{block.name}"
    entries += _tfgan_bn(f"{scope}/cbn_0", block.cbn_0, conditional)
    entries += _tfgan_conv(f"{scope}/snconv1", block.snconv1)
    entries += _tfgan_bn(f"{scope}/cbn_1", block.cbn_1, conditional)
    entries += _tfgan_conv(f"{scope}/snconv2", block.snconv2)
    entries += _tfgan_conv(f"{scope}/snconv3", block.snconv3)
    if index == generator._attention_after:  # pylint: disable=protected-access
      entries += _tfgan_attention(f"{g_prefix}g_ops", generator.attention)
  entries += _tfgan_bn(f"{g_prefix}g_bn", generator.g_bn, False)
  entries += _tfgan_conv(f"{g_prefix}g_snconv_last", generator.g_snconv_last)
  for index, block in enumerate(discriminator.blocks):
    scope = f"{d_prefix}{block.name}"
    entries += _tfgan_conv(f"{scope}/sn_conv1", block.sn_conv1)
    entries += _tfgan_conv(f"{scope}/sn_conv2", block.sn_conv2)
    if block.learnable_shortcut:
      entries += _tfgan_conv(f"{scope}/sn_conv3", block.sn_conv3)
    if index == discriminator._attention_after:  # pylint: disable=protected-access
      entries += _tfgan_attention(f"{d_prefix}d_ops", discriminator.attention)
  entries += _tfgan_sn(f"{d_prefix}d_sn_linear/dense/kernel", discriminator.d_sn_linear,
                       f"{d_prefix}d_sn_linear/dense/bias")
  if discriminator.d_embedding is not None:
    entries += _tfgan_sn(f"{d_prefix}d_embedding/embedding_map", discriminator.d_embedding)
  return entries


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


def estimate_u(sn_layer, u=None, iterations=TFGAN_POWER_ITERATIONS):
  """Sets an SN layer's u ([1, C_out]) by power iteration on its kernel; returns sigma.

  Args:
    sn_layer: a built `SpectralNormalization`.
    u: the start, [1, C_out]; None starts from the layer's current u.
    iterations: power iterations (the official one-per-call update, repeated).
  """
  kernel = np.asarray(sn_layer.kernel, np.float64)
  w = kernel.T if isinstance(sn_layer.layer, keras.layers.Embedding) else kernel.reshape(
      -1, kernel.shape[-1])
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
  path, reader, shapes = _open_checkpoint(checkpoint_path)
  g_prefix = _scope_prefix(shapes, "g_snh0/dense/kernel", "Generator/generator/", path)
  d_prefix = _scope_prefix(shapes, "d_sn_linear/dense/kernel", "Discriminator/discriminator/",
                           path)
  sizes = _infer_sizes(shapes, path, _tfgan_names(g_prefix, d_prefix))
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
  _assign_entries([e for e in entries if not e.is_u], reader, shapes, path, report)
  fresh = 0
  for entry in (e for e in entries if e.is_u):
    sn = entry.sn_layer
    kernel = np.asarray(sn.kernel, np.float64)
    w = kernel.T if isinstance(sn.layer, keras.layers.Embedding) else kernel.reshape(
        -1, kernel.shape[-1])
    start = None
    if entry.name in shapes:
      if shapes[entry.name] != entry.shape:
        raise OfficialCheckpointError(
            f"checkpoint {path} has misshapen variable {entry.name} "
            f"(checkpoint {list(shapes[entry.name])}, expected {list(entry.shape)})")
      u_left = np.asarray(reader.get_tensor(entry.name), np.float64).reshape(1, -1)
      start = _l2n(u_left @ w)
      report.assigned.append(entry.name)
    else:
      fresh += 1
    estimate_u(sn, start, power_iterations)
  report.notes.append(f"u re-estimated with {power_iterations} power iterations "
                      f"({fresh} from a random start)")
  _skip_rest(shapes, report, False, strict, path)
  step = int(reader.get_tensor("global_step")) if "global_step" in shapes else 0
  config = dataclasses.replace(presets.official().model, sn_gradient="stop", bn_epsilon=1e-3,
                               g_bn_momentum=0.999, g_bn_bessel=False, **sizes)
  logging.info("%s", report.summary().splitlines()[0])
  return LoadedModels(generator, discriminator, None, None, config, report, step)


# ----------------------------------------------------------------------------
# Command line.


def convert(checkpoint_path, model_dir, *, restore_optimizer_slots=False):
  """Writes an official checkpoint as a sagan_tf run directory; returns (loaded, saved path).

  model_dir gets `config.json` (the `official()` preset with the inferred
  sizes) and `checkpoints/ckpt-<global step>` with the objects the trainer
  restores: generator, discriminator, both optimisers (fresh unless
  restored), step and rng.
  """
  # Imported here: the run-directory module pulls in the training package.
  from sagan_tf.training import run_dir  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(model_dir, run_dir.CONFIG_FILE)
  if tf.io.gfile.exists(config_path):
    raise OfficialCheckpointError(f"{model_dir} already holds a run ({config_path}); "
                                  "choose an empty --model_dir")
  loaded = load_official(checkpoint_path, restore_optimizer_slots=restore_optimizer_slots)
  config = dataclasses.replace(presets.official(), model=loaded.model_config)
  g_optimizer, d_optimizer = loaded.g_optimizer, loaded.d_optimizer
  if g_optimizer is None:
    g_optimizer, d_optimizer = make_optimizers(config.optimizer)
    g_optimizer.build(loaded.generator.trainable_variables)
    d_optimizer.build(loaded.discriminator.trainable_variables)
  step = tf.Variable(loaded.step, dtype=tf.int64, name="step", trainable=False)
  rng = tf.random.Generator.from_seed(config.runtime.seed)
  tf.io.gfile.makedirs(model_dir)
  run_dir.write_json(config_path, config.to_dict())
  checkpoint = run_dir.make_checkpoint(loaded.generator, loaded.discriminator, g_optimizer,
                                       d_optimizer, step=step, rng=rng)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(model_dir, run_dir.CHECKPOINT_DIR), max_to_keep=None)
  saved = manager.save(checkpoint_number=loaded.step)
  return loaded, saved


def run(checkpoint, model_dir=None, verify=None, restore_optimizer=False, verbose=False):
  """The command line's work; returns the exit code (0 ok, 1 above tolerance, 2 error).

  Args:
    checkpoint: official checkpoint prefix, file or directory.
    model_dir: write a run directory there (see `convert`); None only loads.
    verify: an expected.npz to compare with (see `verify_official`).
    restore_optimizer: restore the Adam slots and iteration counts.
    verbose: print every compared variable.
  """
  try:
    expected = None
    if verify:
      if not tf.io.gfile.exists(verify):
        raise OfficialCheckpointError(f"--verify file {verify} not found")
      try:
        expected = dict(np.load(verify))
      except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise OfficialCheckpointError(f"cannot read --verify file {verify}: {error}") from None
      absent = [k for k in _VERIFY_KEYS if k not in expected]
      if absent:
        raise OfficialCheckpointError(f"--verify file {verify} lacks {_describe(absent)}")
    if model_dir:
      loaded, saved = convert(checkpoint, model_dir, restore_optimizer_slots=restore_optimizer)
      print(loaded.report.summary())
      print(f"wrote {saved} and {os.path.join(model_dir, 'config.json')}")
    else:
      loaded = load_official(checkpoint, restore_optimizer_slots=restore_optimizer)
      print(loaded.report.summary())
    print(f"model: {loaded.model_config}")
    if expected is not None:
      _, _, shapes = _open_checkpoint(checkpoint)
      step2 = "z3" in expected and any(name.endswith("/Adam") for name in shapes)
      results = verify_official(checkpoint, expected, step2=step2)
      print(format_comparisons(results, verbose=verbose))
      failed = [r.quantity for r in results if not r.passed]
      if failed:
        print(f"verify: {len(failed)} of {len(results)} quantities above tolerance: "
              f"{_describe(failed)}", file=sys.stderr)
        return 1
      print(f"verify: all {len(results)} quantities within tolerance")
  except KeyError as error:
    print(f"error: --verify file {verify} lacks {error}", file=sys.stderr)
    return 2
  except (OfficialCheckpointError, OSError) as error:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2
  return 0


_VERIFY_KEYS = ("z2", "labels2", "real2", "g_eval", "g_train", "d_real", "d_fake", "d_loss",
                "d_loss_real", "d_loss_fake", "g_loss")


def _main():
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  # Defined only when run as a program: importers may own flags of these names.
  flags.DEFINE_string("checkpoint", None, "Official TF1 checkpoint prefix, file or directory.")
  flags.DEFINE_string("model_dir", None, "Write a sagan_tf run directory here (config.json and "
                      "checkpoints/ckpt-<global step>).")
  flags.DEFINE_string("verify", None, "expected.npz of the official parity fixture: run the "
                      "converted models on its recorded inputs and compare.")
  flags.DEFINE_bool("restore_optimizer", False, "Also restore the Adam slots and iteration counts.")
  flags.DEFINE_bool("verbose", False, "With --verify, print every variable's errors.")
  flags.mark_flag_as_required("checkpoint")
  args = flags.FLAGS

  def main(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
      return 2
    return run(args.checkpoint, args.model_dir, args.verify, args.restore_optimizer, args.verbose)

  app.run(main)


if __name__ == "__main__":
  _main()
