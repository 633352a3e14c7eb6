"""The command line of `python -m sagan_tf.official`: load, convert, verify.

  python -m sagan_tf.official --checkpoint=PATH [--model_dir=DIR] [--verify=expected.npz]
      [--restore_optimizer]

Exit codes: 0 ok, 1 a verified quantity above its tolerance, 2 an error
(an unreadable checkpoint or --verify file, a --model_dir that holds a run).
"""

import dataclasses
import os
import sys
import zipfile

import numpy as np
import tensorflow as tf

from sagan_tf.configs import presets
from sagan_tf.official.checkpoint_io import load_official
from sagan_tf.official.parity import format_comparisons, verify_official
from sagan_tf.official.reader import OfficialCheckpointError, describe, open_checkpoint
from sagan_tf.training.optimizers import make_optimizers

_VERIFY_KEYS = ("z2", "labels2", "real2", "g_eval", "g_train", "d_real", "d_fake", "d_loss",
                "d_loss_real", "d_loss_fake", "g_loss")


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


def _read_expected(verify):
  """The --verify file's arrays; all of `_VERIFY_KEYS` must be there."""
  if not tf.io.gfile.exists(verify):
    raise OfficialCheckpointError(f"--verify file {verify} not found")
  try:
    expected = dict(np.load(verify))
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise OfficialCheckpointError(f"cannot read --verify file {verify}: {error}") from None
  absent = [k for k in _VERIFY_KEYS if k not in expected]
  if absent:
    raise OfficialCheckpointError(f"--verify file {verify} lacks {describe(absent)}")
  return expected


def _verify(checkpoint, expected, verbose):
  """Prints the comparison table; returns the exit code (0 all within tolerance, 1 not)."""
  _, _, shapes = open_checkpoint(checkpoint)
  step2 = "z3" in expected and any(name.endswith("/Adam") for name in shapes)
  results = verify_official(checkpoint, expected, step2=step2)
  print(format_comparisons(results, verbose=verbose))
  failed = [r.quantity for r in results if not r.passed]
  if failed:
    print(f"verify: {len(failed)} of {len(results)} quantities above tolerance: "
          f"{describe(failed)}", file=sys.stderr)
    return 1
  print(f"verify: all {len(results)} quantities within tolerance")
  return 0


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
    expected = _read_expected(verify) if verify else None
    if model_dir:
      loaded, saved = convert(checkpoint, model_dir, restore_optimizer_slots=restore_optimizer)
      print(loaded.report.summary())
      print(f"wrote {saved} and {os.path.join(model_dir, 'config.json')}")
    else:
      loaded = load_official(checkpoint, restore_optimizer_slots=restore_optimizer)
      print(loaded.report.summary())
    print(f"model: {loaded.model_config}")
    if expected is not None:
      return _verify(checkpoint, expected, verbose)
  except KeyError as error:
    print(f"error: --verify file {verify} lacks {error}", file=sys.stderr)
    return 2
  except (OfficialCheckpointError, OSError) as error:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2
  return 0


def main():
  """Defines the flags and runs `run` under absl; exits with its code."""
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

  def _main(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
      return 2
    return run(args.checkpoint, args.model_dir, args.verify, args.restore_optimizer, args.verbose)

  app.run(_main)
