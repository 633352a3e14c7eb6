"""The layout of a run directory, and restoring a trained generator from one.

model_dir/
  config.json         the resolved ExperimentConfig, written before step 0
  dataset.json        data set name, number of classes and class names
  checkpoints/        tf.train.CheckpointManager files (ckpt-<step>.*)
  train/              TensorBoard summaries
  samples/            PNG sample grids (step_<step>.png)
  saved_model/        the exported generator
"""

import json
import os

import tensorflow as tf

from sagan_tf.configs.experiment import ExperimentConfig

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_DIR = "train"
SAMPLE_DIR = "samples"
SAVED_MODEL_DIR = "saved_model"


class RunDirError(ValueError):
  """A run directory that is missing, incomplete or unreadable."""


def read_config(model_dir):
  """The ExperimentConfig saved in `model_dir`."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise RunDirError(f"{path} not found: {model_dir} is not a sagan_tf run directory")
  try:
    with tf.io.gfile.GFile(path) as f:
      return ExperimentConfig.from_dict(json.load(f))
  except (ValueError, TypeError, json.JSONDecodeError) as error:
    raise RunDirError(f"{path} is not a valid config: {error}") from None


def write_json(path, values):
  """Writes JSON through a temporary file and a rename, so readers never see half a file."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(values, indent=2, sort_keys=True))
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_dataset_info(model_dir):
  """{"name", "num_classes", "class_names"} saved by training, or {} when absent."""
  path = os.path.join(model_dir, DATASET_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def make_checkpoint(generator, discriminator=None, g_optimizer=None, d_optimizer=None,
                    ema_generator=None, step=None, rng=None):
  """The tf.train.Checkpoint that training writes; pass what you have to restore part of it."""
  objects = {}
  for name, value in (("generator", generator), ("discriminator", discriminator), ("g_optimizer", g_optimizer),
                      ("d_optimizer", d_optimizer), ("ema_generator", ema_generator),
                      ("step", step), ("rng", rng)):
    if value is not None:
      objects[name] = value
  return tf.train.Checkpoint(**objects)


def latest_checkpoint(model_dir):
  """Path prefix of the newest checkpoint in `model_dir`, or None."""
  return tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))


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
  except (tf.errors.OpError, ValueError, AssertionError) as error:
    raise RunDirError(f"cannot restore the generator from checkpoint {path}: "
                      f"{str(error).splitlines()[0]}") from None
  return generator, config, int(step.numpy())
