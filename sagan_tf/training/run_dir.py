"""The layout of a run directory, and restoring a trained generator from one.

model_dir/
  config.json         the resolved ExperimentConfig, written before step 0
  dataset.json        data set name, number of classes and class names
  checkpoints/        tf.train.CheckpointManager files (ckpt-<step>.*)
  checkpoints/best/   the checkpoint of the lowest FID so far (train.eval_every > 0)
  metrics.jsonl       one line per evaluation during training: step, wall time, FID, ...
  train/              TensorBoard summaries
  samples/            PNG sample grids (step_<step>.png)
  saved_model/        the exported generator
  .train.lock         held by the train.py training there (local directories)

TensorFlow is imported inside the functions that need it: train.py checks a
run directory's config before paying for the import.
"""

import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile

from sagan_tf.configs.experiment import ExperimentConfig

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_DIR = "train"
SAMPLE_DIR = "samples"
SAVED_MODEL_DIR = "saved_model"
BEST_CHECKPOINT_DIR = os.path.join(CHECKPOINT_DIR, "best")
METRICS_LOG = "metrics.jsonl"
LOCK_FILE = ".train.lock"
_CHECKPOINT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


class RunDirError(ValueError):
  """A run directory that is missing, incomplete or unreadable."""


def _is_remote(path):
  return "://" in path


def _exists(path):
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)
  return os.path.exists(path)


def _read_text(path):
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path) as f:
      return f.read()
  with open(path, encoding="utf-8") as f:
    return f.read()


def _read_json(path, what):
  """The JSON object in `path`; RunDirError naming the file when it is unreadable or garbled."""
  try:
    values = json.loads(_read_text(path))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise RunDirError(f"{path} is not a valid {what}: {' '.join(str(error).split())}") from None
  except RecursionError:
    raise RunDirError(f"{path} is not a valid {what}: nested too deeply") from None
  if not isinstance(values, dict):
    raise RunDirError(f"{path} is not a valid {what}: expected a JSON object, "
                      f"got {type(values).__name__}")
  return values


def read_config(model_dir):
  """The ExperimentConfig saved in `model_dir`."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not _exists(path):
    raise RunDirError(f"{path} not found: {model_dir} is not a sagan_tf run directory")
  values = _read_json(path, "config")
  try:
    return ExperimentConfig.from_dict(values)
  except (ValueError, TypeError) as error:
    raise RunDirError(f"{path} is not a valid config: {error}") from None


def _fixed_on_resume(section, name, old, new):
  """Whether a change of `section.name` from `old` to `new` makes a checkpoint unusable.

  Model fields shape the weights (or give them another meaning), the data
  set gives the labels their meaning, and float16's loss-scale optimizer
  holds state the other precisions lack. Everything else (learning rates,
  EMA, steps, intervals, seeds, devices) is host-side or optimizer
  hyper-parameters that a resumed run can take over.
  """
  if section == "model":
    return True
  if (section, name) == ("data", "dataset"):
    return True
  return (section, name) == ("runtime", "mixed_precision") and "float16" in (old, new)


def resume_changes(saved, config):
  """(refused, adopted): lines 'section.key: saved X, now Y' for every field that differs."""
  refused, adopted = [], []
  for section in dataclasses.fields(saved):
    old_section, new_section = getattr(saved, section.name), getattr(config, section.name)
    for field in dataclasses.fields(old_section):
      old, new = getattr(old_section, field.name), getattr(new_section, field.name)
      if old != new:
        line = f"{section.name}.{field.name}: saved {old!r}, now {new!r}"
        (refused if _fixed_on_resume(section.name, field.name, old, new) else adopted).append(line)
  return refused, adopted


def config_differences(saved, config):
  """Lines naming the fields in which `config` differs from `saved` so that it cannot resume."""
  return resume_changes(saved, config)[0]


def _class_difference(saved, now):
  """What differs between two class-name lists, in a few words for one line."""
  if len(saved) + len(now) <= 60:
    return f"saved {list(saved)}, now {list(now)}"
  changed = [f"label {i}: saved {a!r}, now {b!r}" for i, (a, b) in enumerate(zip(saved, now))
             if a != b]
  counts = f"saved {len(saved)} classes, now {len(now)}"
  return f"{counts}; " + "; ".join(changed[:10]) + (f"; and {len(changed) - 10} more"
                                                    if len(changed) > 10 else "")


def check_dataset_resumable(dataset_info, model_dir):
  """Refuses to resume when the data set's classes differ from the ones the run was trained on.

  Renamed, added, removed or reordered class folders keep the label
  indices but change what they mean; the checkpoint's class embeddings
  would then draw other classes.

  Raises:
    RunDirError: naming both lists.
  """
  saved = read_dataset_info(model_dir)
  if not saved or not dataset_info:
    return
  problems = []
  for key in ("name", "num_classes"):
    if key in saved and saved[key] != dataset_info.get(key):
      problems.append(f"{key}: saved {saved[key]!r}, now {dataset_info.get(key)!r}")
  old, new = list(saved.get("class_names", [])), list(dataset_info.get("class_names", []))
  if "class_names" in saved and old != new:
    problems.append(f"class names: {_class_difference(old, new)}")
  if problems:
    raise RunDirError(
        f"{model_dir} was trained on other classes ({'; '.join(problems)}): each label would now "
        "mean another class; restore the data set as it was, or use a new --model_dir")


def check_resumable(config, model_dir, dataset_info=None):
  """Checks that `model_dir`'s run can continue under `config` (and the data set's classes).

  Returns:
    Lines naming the settings that differ from the saved ones and that the
    resumed run adopts (learning rates, EMA, steps, intervals, ...).

  Raises:
    RunDirError: if the model, the data set or its classes differ, naming
      each setting with its saved and new value.
  """
  refused, adopted = resume_changes(read_config(model_dir), config)
  if refused:
    raise RunDirError(
        f"{model_dir} holds a run with another configuration ({'; '.join(refused)}); "
        "these cannot change on resume: use a new --model_dir or the same settings")
  check_dataset_resumable(dataset_info, model_dir)
  return adopted


def write_json(path, values):
  """Writes JSON through a temporary file and a rename, so readers never see half a file.

  Raises:
    storage.WriteError: the file cannot be written (disk full, ...); the
      temporary file is removed and the previous version is intact.
  """
  write_text(path, json.dumps(values, indent=2, sort_keys=True))


def write_text(path, text):
  """Writes `text` to `path` (any tf.io.gfile path) through a temporary file and a rename.

  Raises:
    storage.WriteError: the file cannot be written (disk full, ...); the
      temporary file is removed and the previous version is intact.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sagan_tf import storage  # pylint: disable=g-import-not-at-top
  tmp = path + ".tmp"

  def cleanup():
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)

  with storage.writing(os.path.basename(path), os.path.dirname(path) or ".", cleanup):
    with tf.io.gfile.GFile(tmp, "w") as f:
      f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_dataset_info(model_dir):
  """{"name", "num_classes", "class_names"} saved by training, or {} when absent."""
  path = os.path.join(model_dir, DATASET_FILE)
  if not _exists(path):
    return {}
  return _read_json(path, "data set description")


def make_checkpoint(generator, discriminator=None, g_optimizer=None, d_optimizer=None,
                    ema_generator=None, step=None, rng=None):
  """The checkpoint that training writes; pass what you have to restore part of it.

  A `checkpoints.RunCheckpoint`: every model and optimizer variable is saved
  under its readable name (generator/g_block1/snconv1/snconv1/kernel/...),
  and run directories written before those names restore as well.
  """
  from sagan_tf.training import checkpoints  # pylint: disable=g-import-not-at-top
  objects = {}
  for name, value in (("generator", generator), ("discriminator", discriminator), ("g_optimizer", g_optimizer),
                      ("d_optimizer", d_optimizer), ("ema_generator", ema_generator),
                      ("step", step), ("rng", rng)):
    if value is not None:
      objects[name] = value
  return checkpoints.RunCheckpoint(**objects)


def checkpoints_on_disk(checkpoint_dir):
  """Prefixes of the ckpt-<step>.index files in `checkpoint_dir`, oldest first.

  A fallback for a lost or unreadable `checkpoint` state file; the state
  file is the authority otherwise, since it only ever names complete
  checkpoints.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.isdir(checkpoint_dir):
    return []
  steps = sorted(int(m.group(1)) for m in map(_CHECKPOINT_INDEX.match,
                                              tf.io.gfile.listdir(checkpoint_dir)) if m)
  return [os.path.join(checkpoint_dir, f"ckpt-{step}") for step in steps]


def latest_checkpoint(model_dir):
  """Path prefix of the newest checkpoint in `model_dir`, or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  directory = os.path.join(model_dir, CHECKPOINT_DIR)
  try:
    latest = tf.train.latest_checkpoint(directory)
  except (ValueError, UnicodeDecodeError, tf.errors.OpError):
    latest = None
  if latest is None:
    # A lost or garbled state file: the newest checkpoint on disk is the best guess.
    found = checkpoints_on_disk(directory)
    latest = found[-1] if found else None
  return latest


def best_checkpoint(model_dir):
  """Path prefix of the best-FID checkpoint in `model_dir` (checkpoints/best/), or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.train.latest_checkpoint(os.path.join(model_dir, BEST_CHECKPOINT_DIR))
  except (ValueError, UnicodeDecodeError, tf.errors.OpError):
    return None


def load_generator(model_dir, use_ema=True, checkpoint_path=None):
  """Restores the generator of a run directory.

  Args:
    model_dir: a directory written by train.py.
    use_ema: restore the weight average when the run kept one.
    checkpoint_path: a specific checkpoint prefix; None takes the newest.

  Returns:
    (generator, config, step): a built `Generator`, the run's
    ExperimentConfig and the training step of the checkpoint.

  Raises:
    RunDirError: no config, no checkpoint, or a checkpoint that does not
      match the config or cannot be read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sagan_tf.models.build import build_from_config  # pylint: disable=g-import-not-at-top
  config = read_config(model_dir)
  path = checkpoint_path or latest_checkpoint(model_dir)
  if path is None:
    raise RunDirError(f"no checkpoint in {os.path.join(model_dir, CHECKPOINT_DIR)}")
  generator, _ = build_from_config(config.model)
  step = tf.Variable(0, dtype=tf.int64)
  ema = use_ema and config.train.ema_decay > 0
  if ema:
    checkpoint = make_checkpoint(None, ema_generator=generator, step=step)
  else:
    checkpoint = make_checkpoint(generator, step=step)
  try:
    checkpoint.read(path).expect_partial()
  except Exception as error:  # pylint: disable=broad-except
    # OpErrors, ValueErrors and, for a truncated data file, IndexError: all
    # mean a checkpoint that cannot be read.
    raise RunDirError(f"cannot restore the generator from checkpoint {path}: "
                      f"{describe_error(error)}") from None
  return generator, config, int(step.numpy())


def describe_error(error):
  """'Type: first line of the message', for one-line error reports."""
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def create(model_dir):
  """Creates `model_dir` if need be and checks that files can be written in it.

  Raises:
    ValueError: it cannot be created or written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.io.gfile.makedirs(model_dir)
    if not _is_remote(model_dir):
      # A unique name: every worker of a multi-worker run probes the same directory.
      with tempfile.TemporaryFile(dir=model_dir):
        pass
  except (OSError, tf.errors.OpError) as error:
    reason = getattr(error, "strerror", None) or describe_error(error)
    raise ValueError(f"--model_dir={model_dir} is not writable: {reason}") from None


def lock(model_dir):
  """Holds an exclusive lock on model_dir/.train.lock for the life of the process.

  Two runs writing one run directory would interleave their checkpoints;
  the OS drops the lock when the process ends, however it ends.

  Returns:
    The open lock file (keep it), or None for a remote directory.
  """
  if _is_remote(model_dir):
    return None
  path = os.path.join(model_dir, LOCK_FILE)
  handle = open(path, "a+")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    handle.seek(0)
    owner = handle.read().strip() or "?"
    handle.close()
    raise ValueError(f"another train.py (pid {owner}) is training in {model_dir}; wait for it "
                     "to end or stop it") from None
  handle.seek(0)
  handle.truncate()
  handle.write(str(os.getpid()))
  handle.flush()
  return handle


def remove_if_unused(model_dir):
  """Removes a run directory if nothing but its lock went into it.

  A run refused at start-up (a value Keras or TensorFlow rejects, ...) then
  leaves no empty run directory that looks like a started run.
  """
  try:
    if set(os.listdir(model_dir)) <= {LOCK_FILE}:
      shutil.rmtree(model_dir)
  except OSError:
    pass
