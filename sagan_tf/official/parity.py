"""Checking our conversion of an official checkpoint against values recorded from the official code.

`verify_official` reproduces the runs of the parity fixture
(official_parity/small/README.md): an eval-mode forward pass, one
training-mode pass with all gradients (`reference_run`), and a full
training step through `sagan_tf.training.step.TrainStep`, the step
train.py runs (`official_step`, `verify_step2`). Each quantity becomes a
`Comparison` against its tolerance; `format_comparisons` tabulates them.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from sagan_tf import losses
from sagan_tf.configs import presets
from sagan_tf.official.checkpoint_io import ADAM_BETA_2, load_official
from sagan_tf.official.names import OFFICIAL_PREFIX, official_entries
from sagan_tf.official.reader import D_BETA_POWERS, G_BETA_POWERS
from sagan_tf.training.optimizers import dense_gradients
from sagan_tf.training.step import TrainStep

OUTPUT_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-2
# Absolute floor for the near-zero G bias gradients: float noise, <= 3.3e-7 in
# the fixture against ~1e-2 for the other G gradients.
BIAS_GRADIENT_FLOOR = 1e-5
STEP_TOLERANCE = 5e-4
# u is a unit vector; the fixture's float floor is ~1e-7.
U_TOLERANCE = 1e-5


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
