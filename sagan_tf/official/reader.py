"""What both checkpoint loaders share: opening a checkpoint, assigning variables, the report.

`checkpoint_io.load_official` (the official TF1 code) and `tfgan.load_tfgan`
(TF-GAN's example) open a name-based checkpoint with `open_checkpoint`,
copy their `MappedVariable`s with `assign_entries`, and account for every
other variable with `skip_rest`; a `LoadReport` records what was done.
"""

import dataclasses
import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

# TF1 bookkeeping that has no counterpart in the models: Adam's bias-correction
# powers (D's optimiser, built first, got the unsuffixed pair) and step counters.
D_BETA_POWERS = ("beta1_power", "beta2_power")
G_BETA_POWERS = ("beta1_power_1", "beta2_power_1")
COUNTERS = ("global_step", "d_step", "g_step")


class OfficialCheckpointError(ValueError):
  """A checkpoint that is unreadable or does not match the models."""


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


def _checkpoint_prefix(path):
  # A `.index` or `.data-*` file name opens as an empty reader; use its prefix.
  return re.sub(r"\.(index|data-\d+-of-\d+)$", "", os.fspath(path))


def open_checkpoint(path):
  """(prefix, reader, {name: shape}) of a checkpoint prefix, one of its files or its directory."""
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


def global_step(reader, shapes):
  """The checkpoint's `global_step`, 0 when it has none."""
  return int(reader.get_tensor("global_step")) if "global_step" in shapes else 0


def describe(names, limit=5):
  """The first `limit` names, comma-separated, and how many more there are."""
  shown = ", ".join(names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def assign_entries(entries, reader, shapes, path, report):
  """Copies every entry's checkpoint value into its variable; all must exist with their shape."""
  missing = [e.name for e in entries if e.name not in shapes]
  if missing:
    raise OfficialCheckpointError(f"checkpoint {path} lacks {len(missing)} variable(s) the model "
                                  f"needs: {describe(missing)}")
  wrong = [f"{e.name} (checkpoint {list(shapes[e.name])}, expected {list(e.shape)})"
           for e in entries if shapes[e.name] != e.shape]
  if wrong:
    raise OfficialCheckpointError(
        f"checkpoint {path} has misshapen variable(s): {describe(wrong)}")
  for entry in entries:
    value = np.asarray(reader.get_tensor(entry.name))
    entry.variable.assign(value.reshape(entry.variable.shape).astype(entry.variable.dtype))
    report.assigned.append(entry.name)


def skip_rest(shapes, report, restore_optimizer_slots, strict, path):
  """Reports every unassigned variable as known bookkeeping, or raises / warns about it."""
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
               f"{describe(unexpected)}")
    if strict:
      raise OfficialCheckpointError(message + " (strict=False ignores them)")
    logging.warning(message)
    for name in unexpected:
      report.skipped[name] = "not a variable of these models"
