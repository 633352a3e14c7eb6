"""Saving and restoring a run's checkpoints: the manager, its repair, candidates, failed saves.

`checkpoints.py` defines what a checkpoint holds (its object graph); this
file handles the files of checkpoints/ in a run directory: opening the
tf.train.CheckpointManager (rebuilding a lost or garbled `checkpoint` state
file), listing the checkpoints to restore newest first, skipping unreadable
ones, saving, and cleaning up what a failed or killed save leaves.
"""

import os
import re

import tensorflow as tf

from sagan_tf import storage
from sagan_tf.training import run_dir
from sagan_tf.training.errors import TrainingError


class RunCheckpoints:
  """The checkpoints of one run directory, as one worker of the run sees them.

  Every worker restores from the chief's checkpoints in
  `model_dir/checkpoints`; only the chief saves there. The others still save
  (saving may need every worker), into `write_dir/checkpoints`.

  Args:
    checkpoint: the tf.train.Checkpoint to save.
    step: the step variable, the number of each checkpoint.
    model_dir: the run directory.
    write_dir: where this worker writes: model_dir on the chief.
    max_to_keep: checkpoints kept (train.keep_checkpoints).
    is_chief: whether this worker writes model_dir (and may repair it).
    log: callable taking one line.
  """

  def __init__(self, checkpoint, step, model_dir, write_dir, max_to_keep, is_chief, log):
    self.checkpoint = checkpoint
    self.step = step
    self.directory = os.path.join(model_dir, run_dir.CHECKPOINT_DIR)
    self.write_directory = os.path.join(write_dir, run_dir.CHECKPOINT_DIR)
    self.is_chief = is_chief
    self.log = log
    self.manager = self._open_manager(max_to_keep)
    self._save_manager = self.manager if is_chief else self._scratch_manager()

  def _scratch_manager(self):
    """The manager of a non-chief worker's scratch directory: it never holds what is restored."""
    return tf.train.CheckpointManager(self.checkpoint, self.write_directory, max_to_keep=1,
                                      step_counter=self.step)

  def _open_manager(self, max_to_keep):
    """The CheckpointManager of the run, rebuilding a lost or unreadable `checkpoint` file.

    The state file lists the complete checkpoints. When it is garbled, or
    missing next to checkpoint files, the chief keeps a garbled one as
    checkpoint.unreadable and writes a new one from the ckpt-<step>.index
    files on disk, which `restore` then tries newest first.
    """
    def open_manager():
      return tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=max_to_keep,
                                        step_counter=self.step)
    try:
      manager, reason = open_manager(), None
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as error:
      manager, reason = None, f"cannot be read ({run_dir.describe_error(error)})"
    found = run_dir.checkpoints_on_disk(self.directory)
    if manager is not None and (manager.checkpoints or not found):
      return manager
    state = os.path.join(self.directory, "checkpoint")
    self.log(f"checkpoint state file {state} {reason or 'is missing'}; using the {len(found)} "
             "checkpoint(s) found next to it")
    if not self.is_chief:
      # Another worker's manager: it never saves, and `restore` lists the files itself.
      return self._scratch_manager()
    if reason:
      tf.io.gfile.rename(state, state + ".unreadable", overwrite=True)
    if found:
      # Timestamps after last_preserved_timestamp: the manager rotates these out as usual.
      times = [tf.io.gfile.stat(path + ".index").mtime_nsec / 1e9 for path in found]
      tf.compat.v1.train.update_checkpoint_state(
          self.directory, found[-1], all_model_checkpoint_paths=found,
          all_model_checkpoint_timestamps=times, last_preserved_timestamp=min(times) - 1.0)
    return open_manager()

  def candidates(self):
    """Checkpoint prefixes to restore from, newest first, read afresh from the chief's directory.

    Read each time rather than taken from `self.manager`: on other workers
    that manager does not see the checkpoints the chief has saved since.
    """
    try:
      state = tf.train.get_checkpoint_state(self.directory)
    except (ValueError, UnicodeDecodeError, tf.errors.OpError):
      state = None
    if state is not None and state.all_model_checkpoint_paths:
      paths = list(state.all_model_checkpoint_paths)
    else:
      # No state file, or an unreadable one: the files on disk.
      paths = run_dir.checkpoints_on_disk(self.directory)
    return list(reversed(paths))

  def latest(self):
    """The newest checkpoint prefix in the run directory, or None."""
    candidates = self.candidates()
    return candidates[0] if candidates else None

  def restore_newest_readable(self, restore_fn):
    """Calls `restore_fn(path)` on the newest checkpoint it does not fail on; returns that path.

    Checkpoints that cannot be read (truncated, garbled, another model) are
    reported and skipped for the next older one.

    Args:
      restore_fn: callable(path) restoring the checkpoint, returning lines
        to log.

    Returns:
      The restored prefix, or None when there is no checkpoint.

    Raises:
      TrainingError: checkpoints exist but none can be read. They are left
        as they are.
    """
    checkpoints = self.candidates()
    reasons = []
    for index, path in enumerate(checkpoints):
      try:
        notes = restore_fn(path)
      except Exception as error:  # pylint: disable=broad-except
        # OpErrors, ValueErrors, AssertionErrors and, for a truncated data
        # file, IndexError: all mean this checkpoint cannot be read.
        older = "; trying an older one" if index + 1 < len(checkpoints) else ""
        reasons.append(run_dir.describe_error(error))
        self.log(f"checkpoint {path} cannot be read ({reasons[-1]}){older}")
        continue
      self.log(f"resumed from {path} at step {int(self.step.numpy())}")
      for note in notes:
        self.log(note)
      return path
    if checkpoints:
      raise TrainingError(
          f"none of the {len(checkpoints)} checkpoint(s) in {self.directory} can be read "
          f"(newest: {reasons[0]}); they are left untouched; to train afresh, pass another "
          "--model_dir")
    return None

  def save(self, advice):
    """Saves a checkpoint of the current step; returns its prefix.

    CheckpointManager writes the data and index files first and then
    replaces the `checkpoint` state file atomically, so a kill at any moment
    leaves the state file naming complete checkpoints only. A failed write
    removes its partial files and raises storage.WriteError ending in
    `advice`.
    """
    step = int(self.step.numpy())
    directory = self.write_directory
    with storage.writing(f"checkpoint ckpt-{step}", directory,
                         lambda: remove_failed_save(directory, step, self._save_manager),
                         "removed its partial files; " + advice):
      return self._save_manager.save(checkpoint_number=self.step)

  def remove_stale_temp_files(self):
    """Deletes the <prefix>_temp folders of a save killed mid-write: never listed, never read."""
    if not self.is_chief or not tf.io.gfile.isdir(self.directory):
      return
    for name in tf.io.gfile.listdir(self.directory):
      name = name.rstrip("/")
      if name.startswith("ckpt-") and name.endswith("_temp"):
        tf.io.gfile.rmtree(os.path.join(self.directory, name))
        self.log(f"removed {name}, left by a save that was cut short")


def remove_failed_save(directory, step, manager):
  """Deletes what a failed save of `step` left: its _temp folder, its unlisted files, state temps.

  Files of a checkpoint the state file of `manager` (the CheckpointManager
  of `directory`) lists are kept: they are complete.
  """
  listed = set(manager.checkpoints)
  prefix = os.path.join(directory, f"ckpt-{step}")
  for name in tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []:
    name = name.rstrip("/")
    path = os.path.join(directory, name)
    partial = name == f"ckpt-{step}_temp" or (
        re.fullmatch(rf"ckpt-{step}\.(index|data-\d+-of-\d+)", name) and prefix not in listed)
    if partial or name.startswith("checkpoint.tmp"):
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)


def adopt_learning_rates(rates):
  """Sets optimizers' learning rates after a restore (Keras saves them with the optimizer).

  Args:
    rates: pairs of (optimizer, learning rate); a wrapping optimizer's
      inner optimizer is set too.
  """
  for optimizer, rate in rates:
    for inner in (optimizer, getattr(optimizer, "inner_optimizer", None)):
      variable = getattr(inner, "learning_rate", None) if inner is not None else None
      if isinstance(variable, tf.Variable) or hasattr(variable, "assign"):
        variable.assign(rate)


def restore_model(checkpoint, checkpoint_without_average, ema, path, ema_decay):
  """Restores `checkpoint` (everything but the data position) from `path`; returns lines to log.

  An AssertionError of `assert_existing_objects_matched` means the
  checkpoint lacks some of our objects; if it lacks only the weight average
  (the run was trained without one, `ema` is not None) the rest is restored
  through `checkpoint_without_average()` and the average copied from the
  generator.
  """
  try:
    checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
    return []
  except AssertionError:
    if ema is None:
      raise
    checkpoint_without_average().restore(path).assert_existing_objects_matched().expect_partial()
  ema.copy()
  return [f"the checkpoint has no generator weight average (the run had train.ema_decay=0): "
          f"it starts now as a copy of the generator, with decay {ema_decay}"]
