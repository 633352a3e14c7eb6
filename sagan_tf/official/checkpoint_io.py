"""Official TF1 checkpoints in and out: `load_official` (with the Adam slots) and `save_official`."""

import dataclasses
import math
import os

from absl import logging
import numpy as np
import tensorflow as tf

from sagan_tf.configs import OptimizerConfig, presets
from sagan_tf.models.build import build_from_config
from sagan_tf.official.names import official_discriminator_entries, official_generator_entries
from sagan_tf.official.reader import (D_BETA_POWERS, G_BETA_POWERS, LoadedModels, LoadReport,
                                      OfficialCheckpointError, assign_entries, describe,
                                      global_step, open_checkpoint, skip_rest)
from sagan_tf.official.sizes import OFFICIAL_NAMES, infer_sizes
from sagan_tf.training.optimizers import make_optimizers

# The official model.py / TF-GAN hyper-parameters (official-sagan.md section 7).
G_LEARNING_RATE = 1e-4
D_LEARNING_RATE = 4e-4
ADAM_BETA_1 = 0.0
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-8


def make_official_optimizers():
  """(G, D) Adam as the official code: lr 1e-4 / 4e-4, betas (0, 0.999), eps 1e-8, TF1's kernel."""
  return make_optimizers(OptimizerConfig(
      g_learning_rate=G_LEARNING_RATE, d_learning_rate=D_LEARNING_RATE, beta_1=ADAM_BETA_1,
      beta_2=ADAM_BETA_2, epsilon=ADAM_EPSILON))


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


def _restore_slots(optimizer, model, entries, reader, shapes, path, report):
  trainable = [e for e in entries if e.variable.trainable]
  names = [f"{e.name}/{slot}" for e in trainable for slot in ("Adam", "Adam_1")]
  missing = [n for n in names if n not in shapes]
  if missing:
    raise OfficialCheckpointError(f"checkpoint {path} lacks {len(missing)} Adam slot(s): "
                                  f"{describe(missing)}")
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
  path, reader, shapes = open_checkpoint(checkpoint_path)
  model_config = dataclasses.replace(presets.official().model, sn_gradient=sn_gradient,
                                     **infer_sizes(shapes, path, OFFICIAL_NAMES))
  generator, discriminator = build_from_config(model_config)
  report = LoadReport(path)
  g_entries = official_generator_entries(generator)
  d_entries = official_discriminator_entries(discriminator)
  assign_entries(g_entries + d_entries, reader, shapes, path, report)
  g_optimizer = d_optimizer = None
  if restore_optimizer_slots:
    g_optimizer, d_optimizer = make_official_optimizers()
    _restore_slots(g_optimizer, generator, g_entries, reader, shapes, path, report)
    _restore_slots(d_optimizer, discriminator, d_entries, reader, shapes, path, report)
    g_optimizer.iterations.assign(
        _adam_iterations(reader, shapes, G_BETA_POWERS[1], "g_step", report))
    d_optimizer.iterations.assign(
        _adam_iterations(reader, shapes, D_BETA_POWERS[1], "d_step", report))
  skip_rest(shapes, report, restore_optimizer_slots, strict, path)
  logging.info("%s", report.summary().splitlines()[0])
  return LoadedModels(generator, discriminator, g_optimizer, d_optimizer, model_config, report,
                      global_step(reader, shapes))


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
