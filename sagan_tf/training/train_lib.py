"""What train.py runs once its flags check out: run directory, data, Trainer, export, exit status.

`TrainRun.run` goes from a checked config to a trained and exported
generator (or a clean stop); `TrainRun.failure` turns what it raises into the
one-line message and exit status docs/reliability.md documents.
"""

import os
import sys
import threading

import tensorflow as tf

from sagan_tf import data
from sagan_tf import export
from sagan_tf import storage
from sagan_tf.data import folder
from sagan_tf.training import precision, preflight, run_dir, signals
# Looked up as trainer_lib.Trainer when a run starts: tests substitute it.
from sagan_tf.training import trainer as trainer_lib

# Exit statuses; docs/reliability.md explains them.
EXIT_USAGE = 2       # a bad command line, config, data set or run directory
EXIT_DIVERGED = 3    # a NaN or Inf loss or weight (after any rollbacks)
EXIT_FAILED = 1      # a TensorFlow error mid-run (out of memory, ...), or a crash
# 4 (sagan_tf.storage.EXIT_WRITE_FAILED): a file could not be written (disk full, ...)
# Seconds a TPU may take to connect and initialise before train.py gives up.
TPU_TIMEOUT_ENV = "SAGAN_TF_TPU_TIMEOUT"
TPU_TIMEOUT_DEFAULT = 600


class Stopped(Exception):
  """A stop signal arrived before training (or before the export): nothing to save, exit 0."""


def make_dataset_fn(config):
  """The Trainer's `make_dataset` for `config`: the shuffled, repeated training batches."""
  def make_dataset(context, per_replica_batch):
    return data.make_dataset(
        config.data.dataset, image_size=config.model.image_size, batch_size=per_replica_batch,
        data_dir=config.data.data_dir, split=config.data.split, shuffle=True, repeat=True,
        random_flip=config.data.random_flip, shuffle_buffer=config.data.shuffle_buffer,
        seed=config.runtime.seed, input_context=context,
        conditional=config.model.num_classes > 0,
        skip_bad_images=config.data.skip_bad_images)
  return make_dataset


def dataset_json(config, info):
  """What dataset.json records of the data set `info` for a model of `config`."""
  return {"name": info.name, "num_classes": config.model.num_classes,
          "class_names": list(info.class_names)[:config.model.num_classes]}


def start_tpu_watchdog(runtime):
  """Exits with a one-line error when a TPU does not connect in time (TF may wait for ever)."""
  if not (runtime.strategy == "tpu" or (runtime.strategy == "auto" and runtime.tpu)):
    return None
  text = os.environ.get(TPU_TIMEOUT_ENV, str(TPU_TIMEOUT_DEFAULT))
  try:
    seconds = float(text)
  except ValueError:
    seconds = TPU_TIMEOUT_DEFAULT

  def give_up():
    print(f"train.py: error: TPU {runtime.tpu!r} did not connect and initialise within "
          f"{seconds:.0f} s (${TPU_TIMEOUT_ENV}); check the address and that the TPU is up",
          file=sys.stderr, flush=True)
    os._exit(EXIT_USAGE)  # pylint: disable=protected-access

  timer = threading.Timer(seconds, give_up)
  timer.daemon = True
  timer.start()
  return timer


# train.py's --export values: "auto" is best when evaluation ran, else last.
EXPORT_CHOICES = ("auto", "best", "last", "none")


def export_source(trainer, model_dir, config, which, log):
  """(generator, step) that `which` ("auto", "best" or "last") exports.

  "best" and "auto" take the generator (the weight average when kept) of
  checkpoints/best/ when train.eval_every is on and an evaluation saved one;
  otherwise, with a line when "best" was asked for, the trainer's last one.
  """
  last = trainer.sample_generator, int(trainer.step.numpy())
  best = run_dir.best_checkpoint(model_dir) if config.train.eval_every else None
  if which == "last" or (which == "auto" and best is None):
    return last
  if best is None:
    log("--export=best: no evaluation saved a best checkpoint; exporting the last step")
    return last
  try:
    generator, _, step = run_dir.load_generator(model_dir, use_ema=True, checkpoint_path=best)
  except run_dir.RunDirError as error:
    log(f"{error}; exporting the last step")
    return last
  return generator, step


def export_run(trainer, model_dir, info, config, which="last", log=print):
  """Exports the generator `which` chooses to model_dir/saved_model (see export_to_run_dir)."""
  generator, step = export_source(trainer, model_dir, config, which, log)
  return export.export_to_run_dir(
      generator, model_dir, step=step,
      class_names=list(info.class_names)[:config.model.num_classes],
      ema=config.train.ema_decay > 0, dataset=config.data.dataset)


class TrainRun:
  """One train.py run, from a checked config to the export.

  Args:
    config: the ExperimentConfig from train.py's flags (num_classes not yet
      from the data).
    overrides: the overrides that made it (they tell whether num_classes
      was set).
    model_dir: the run directory.
    startup: the `signals.StartupSignals` installed at start-up.
    log: callable taking one line.
  """

  def __init__(self, config, overrides, model_dir, startup, log=None):
    self.config = config
    self.overrides = overrides
    self.model_dir = model_dir
    self.startup = startup
    self.log = log or (lambda line: print(line, flush=True))
    # Multi-worker runs leave only together (see Trainer): no early exits there.
    self.solo = config.runtime.strategy != "multi_worker"
    self.created = False
    self._lock = None

  def _stop_if_signalled(self, where):
    if self.solo and self.startup.signal is not None:
      raise Stopped(f"stopped by {self.startup.signal} {where}; nothing to save")

  def run(self, on_nan="stop", max_rollbacks=3, export_generator=True, feature_network=None):
    """Trains to train.train_steps and exports; returns quietly when stopped by a signal.

    Args:
      on_nan, max_rollbacks: the Trainer's.
      export_generator: one of `EXPORT_CHOICES` (True: "auto", False: "none").
      feature_network: the Trainer's (tests).

    Raises:
      Stopped: a signal before training or the export.
      Anything `failure` maps to an exit status.
    """
    self._stop_if_signalled("during start-up")
    info = self._prepare()
    self._stop_if_signalled("before training started")
    watchdog = start_tpu_watchdog(self.config.runtime)
    trainer = trainer_lib.Trainer(
        self.config, self.model_dir, make_dataset_fn(self.config),
        dataset_info=dataset_json(self.config, info), log=self.log, on_nan=on_nan,
        max_rollbacks=max_rollbacks, feature_network=feature_network)
    if watchdog is not None:
      watchdog.cancel()
    result = trainer.train(stop_request=self.startup)
    # Only the chief exports: the generator's variables are mirrored, every
    # worker holds the same values, and the others must not write model_dir.
    which = {True: "auto", False: "none"}.get(export_generator, export_generator)
    if not result.get("stopped_by_signal") and which != "none" and trainer.is_chief:
      self._stop_if_signalled("before the export (run the same command to export)")
      path = export_run(trainer, self.model_dir, info, self.config, which, self.log)
      self.log(f"exported the generator of step {export.read_metadata(path)['step']} to {path}")
    signals.ignore_stop_signals()

  def _check_file_systems(self):
    config = self.config
    preflight.check_file_system(self.model_dir, "--model_dir")
    if config.data.dataset.startswith("folder:"):
      preflight.check_file_system(config.data.dataset[len("folder:"):], "--dataset=folder:")
    if config.data.data_dir:
      preflight.check_file_system(config.data.data_dir, "--data_dir")

  def _prepare(self):
    """Reads the data set's description, settles num_classes, creates and locks the run directory.

    Returns:
      The DatasetInfo.
    """
    self._check_file_systems()
    config = self.config
    info = data.get_dataset_info(config.data.dataset, config.data.data_dir, config.data.split,
                                 skip_bad_images=config.data.skip_bad_images)
    if info.skipped:
      path, reason = info.skipped[0]
      self.log(f"skipped {len(info.skipped)} image(s) TensorFlow cannot decode "
               f"(data.skip_bad_images=true), e.g. {path}: {reason}; training on the other "
               f"{info.num_examples}")
    self.config = config = preflight.with_data_classes(config, self.overrides, info.num_classes)
    self.config = config = precision.resolve_config(config, self.log)
    preflight.check_num_classes(config, info)
    if tf.io.gfile.exists(os.path.join(self.model_dir, run_dir.CONFIG_FILE)):
      # Before anything is written: dataset.json and config.json are
      # replaced only once the run is known to continue.
      for line in run_dir.check_resumable(config, self.model_dir, dataset_json(config, info)):
        self.log(f"resuming with a changed setting, adopted: {line}")
    self.created = not tf.io.gfile.exists(self.model_dir)
    run_dir.create(self.model_dir)
    self._lock = run_dir.lock(self.model_dir) if self.solo else None
    self.log(f"config:\n{config.to_json()}")
    return info

  def _step_failure(self, error):
    if isinstance(error.op_error, tf.errors.ResourceExhaustedError):
      return trainer_lib.out_of_memory_message(error.op_error, self.config, error.step), EXIT_FAILED
    if self.config.data.dataset.startswith("folder:"):
      culprit = folder.find_undecodable_image(self.config.data.dataset)
      if culprit is not None:
        return self._usage_failure(f"{culprit}; fix or remove it, then run the same command to "
                                   "resume from the last checkpoint")
    return error, EXIT_FAILED

  def _usage_failure(self, error):
    if self.created:
      run_dir.remove_if_unused(self.model_dir)
    return error, EXIT_USAGE

  def failure(self, error):
    """The (message, exit status) train.py reports for an error `run` raised; None for a crash."""
    if isinstance(error, trainer_lib.StepError):
      return self._step_failure(error)
    if isinstance(error, trainer_lib.DivergenceError):
      return error, EXIT_DIVERGED
    if isinstance(error, storage.WriteError):
      return error, storage.EXIT_WRITE_FAILED
    if isinstance(error, (OSError, tf.errors.OpError)):
      # A write outside `storage.writing` (e.g. the summary writer closing on
      # a full disk; TensorFlow reports ENOSPC as ResourceExhaustedError).
      if storage.is_write_failure(error):
        return (f"cannot write to {self.model_dir}: {storage.describe(error)} "
                f"({storage.free_space(self.model_dir)}); the checkpoints are intact; free some "
                "space and run the same command to resume"), storage.EXIT_WRITE_FAILED
      if isinstance(error, tf.errors.ResourceExhaustedError):
        # Outside the training chunks: building, tracing, the first samples.
        return trainer_lib.out_of_memory_message(error, self.config), EXIT_FAILED
      return None
    if isinstance(error, (ValueError, data.DataError, trainer_lib.TrainingError)):
      return self._usage_failure(error)
    return None
