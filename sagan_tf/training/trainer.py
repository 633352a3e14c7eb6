"""The host side of training: set-up, resume, the loop over compiled chunks, checkpoints, samples."""

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import threading
import time

import tensorflow as tf

from sagan_tf import samples
from sagan_tf import storage
from sagan_tf.training import distribute, run_dir
from sagan_tf.training.components import build_components

ON_NAN_POLICIES = ("stop", "rollback")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DATA_ITERATOR = "data_iterator"


class TrainingError(RuntimeError):
  """Training cannot go on: divergence, a mismatched run directory, a bad batch split."""


class DivergenceError(TrainingError):
  """A NaN or Inf loss or weight; the checkpoints on disk predate it."""


class StepError(TrainingError):
  """A TensorFlow error inside a compiled chunk: unreadable input data, out of memory, ...

  Attributes:
    op_error: the tf.errors.OpError.
    step: the step the chunk started from; the checkpoints predate it.
  """

  def __init__(self, message, op_error, step):
    super().__init__(message)
    self.op_error = op_error
    self.step = step


class StopRequest:
  """Turns SIGTERM and SIGINT (preemption, Ctrl-C) into a stop flag.

  Python runs signal handlers only between bytecodes of the main thread, so a
  plain handler would wait for a compiled chunk of `steps_per_loop` steps to
  return. The C-level handler also writes the signal number to a wakeup file
  descriptor: a watcher thread reads it at once and sets `flag`, a boolean
  tf.Variable that the compiled loop reads before every iteration, so the
  chunk ends after the step in flight. A second signal exits at once, with
  status 128 + signal number, without saving.

  Args:
    flag: a boolean tf.Variable to set, or None.
    initial: an object whose `signal` attribute names a signal that arrived
      before this request took over (train.py's start-up handler), or None.
    log: callable taking one line.
  """

  def __init__(self, flag=None, initial=None, log=print):
    self.signal = None
    self.flag = flag
    self._initial = initial
    self._log = log
    self._count = 0
    self._lock = threading.Lock()
    self._previous = {}
    self._previous_wakeup_fd = None
    self._sockets = None
    self._watcher = None

  def __enter__(self):
    for sig in STOP_SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    if self._previous:
      reader, writer = socket.socketpair()
      writer.setblocking(False)
      try:
        self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._sockets = (reader, writer)
        self._watcher = threading.Thread(target=self._watch, name="stop-request", daemon=True)
        self._watcher.start()
      except ValueError:
        reader.close()
        writer.close()
    # Installed first, then read: a signal in between is seen by one of the two.
    if self._initial is not None and self._initial.signal is not None:
      self._received(getattr(signal, self._initial.signal), first_only=True)
    return self

  def _watch(self):
    reader = self._sockets[0]
    while True:
      data = reader.recv(64)
      for signum in data:
        if signum == 0:  # Written by __exit__.
          return
        if signum in STOP_SIGNALS:
          self._received(signum)
      if not data:
        return

  def _handle(self, signum, frame):
    del frame
    if self._watcher is None:
      self._received(signum)

  def _received(self, signum, first_only=False):
    with self._lock:
      self._count += 1
      if self._count > 1 and not first_only:
        self._log(f"second {signal.Signals(signum).name}: exiting at once without saving "
                  "(the last checkpoint is kept)")
        os._exit(128 + signum)  # pylint: disable=protected-access
      if self.signal is None:
        self.signal = signal.Signals(signum).name
      if self.flag is not None:
        self.flag.assign(True)

  def __exit__(self, *args):
    if self._sockets is not None:
      signal.set_wakeup_fd(self._previous_wakeup_fd)
      self._sockets[1].setblocking(True)
      self._sockets[1].send(b"\0")
      self._watcher.join(timeout=5)
      for sock in self._sockets:
        sock.close()
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _CheckpointableInput:
  """Per-replica batches from one tf.data iterator, which, unlike a distributed one, checkpoints.

  Replica r of each round gets the r-th of the next `num_replicas` batches,
  as the distributed iterator of a single-worker strategy hands them out.
  Used for deterministic single-worker runs, so that a resumed run reads the
  batches the uninterrupted run would have read.
  """

  def __init__(self, strategy, dataset):
    self.strategy = strategy
    with tf.device("/cpu:0"):
      self.iterator = iter(dataset)

  def __next__(self):
    batches = [next(self.iterator) for _ in range(self.strategy.num_replicas_in_sync)]
    if len(batches) == 1:
      return batches[0]
    return self.strategy.experimental_distribute_values_from_function(
        lambda context: batches[context.replica_id_in_sync_group])


def _format_eta(seconds):
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


def check_resumable(config, model_dir, dataset_info=None):
  """Refuses to resume a run directory whose model or data differ; returns the adopted changes."""
  try:
    return run_dir.check_resumable(config, model_dir, dataset_info)
  except run_dir.RunDirError as error:
    raise TrainingError(str(error)) from None


def make_strategy(runtime):
  """The strategy of `runtime`; "mirrored" on a machine without GPUs spans all logical CPUs.

  tf.distribute.MirroredStrategy() alone takes only CPU:0 there; with the CPU
  split into logical devices (train.py's SAGAN_TF_LOGICAL_CPUS) a CPU-only
  machine runs the multi-replica code path.
  """
  # Listing logical devices starts the TensorFlow runtime, after which a
  # multi-worker strategy can no longer be set up: only for "mirrored".
  if runtime.strategy == "mirrored" and not tf.config.list_logical_devices("GPU"):
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
      return tf.distribute.MirroredStrategy([device.name for device in cpus])
  return distribute.get_strategy(runtime.strategy, runtime.tpu)


def _first_line(error):
  return run_dir.describe_error(error)


def out_of_memory_message(error, config, step=None):
  """One line for a tf.errors.ResourceExhaustedError: what ran out, and which flag to change.

  Args:
    error: the ResourceExhaustedError (TensorFlow's "OOM when allocating
      tensor with shape[...] ... on <device> by allocator <name>").
    config: the ExperimentConfig of the run.
    step: the step the failing chunk started from, or None outside the loop.
  """
  text = str(error)
  shape = re.search(r"shape\[([^\]]*)\]", text)
  device = re.search(r" on (/\S+|\S+:\d+)", text)
  where = device.group(1).rstrip(",").split("device:")[-1] if device else "the device"
  tensor = f" (a tensor of shape [{shape.group(1)}])" if shape else ""
  when = f" after step {step}" if step is not None else " while building or tracing the model"
  train, model = config.train, config.model
  return (f"out of memory on {where}{when}{tensor}: the batch of "
          f"train.batch_size={train.batch_size} images at {model.image_size}x{model.image_size} with model widths g_width="
          f"{model.g_width}, d_width={model.d_width} does not fit; lower --batch_size (or "
          "model.g_width / model.d_width), or use more devices (--strategy=mirrored); the "
          "checkpoints are intact")


class Trainer:
  """Builds everything for one experiment and runs it to `train.train_steps`.

  Args:
    config: the resolved ExperimentConfig (num_classes already set from the
      data).
    model_dir: the run directory (see `run_dir`).
    make_dataset: callable(input_context, per_replica_batch) -> tf.data of
      (images, labels), repeated.
    dataset_info: dict written to dataset.json (name, num_classes,
      class_names).
    log: callable taking one line of progress text.
    on_nan: "stop" raises DivergenceError at a NaN or Inf loss or weight;
      "rollback" restores the newest checkpoint, reseeds the noise and goes
      on, at most `max_rollbacks` times in this process.
    max_rollbacks: the cap of "rollback".
  """

  def __init__(self, config, model_dir, make_dataset, dataset_info=None, log=print, on_nan="stop",
               max_rollbacks=3):
    if on_nan not in ON_NAN_POLICIES:
      raise ValueError(f"on_nan must be one of {ON_NAN_POLICIES}, got {on_nan!r}")
    if max_rollbacks < 0:
      raise ValueError(f"max_rollbacks must be >= 0, got {max_rollbacks}")
    self.config = config
    self.model_dir = model_dir
    self.log = log
    self.on_nan = on_nan
    self.max_rollbacks = max_rollbacks
    self.rollbacks = 0
    self._saved_step = None
    runtime = config.runtime
    if runtime.deterministic:
      tf.config.experimental.enable_op_determinism()
    self.strategy = make_strategy(runtime)
    replicas = self.strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
      raise TrainingError(f"batch size {config.train.batch_size} does not divide over {replicas} "
                          "replicas; use a multiple of the replica count")
    self.per_replica_batch = config.train.batch_size // replicas
    self._multi_worker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    single_host = not self._multi_worker and not isinstance(self.strategy, tf.distribute.TPUStrategy)
    # Read by the compiled loop of single-host runs, set from a signal-watching
    # thread. Multi-worker and TPU runs pass no flag: a worker leaving a chunk
    # early would leave the others waiting in a collective, so they stop
    # between chunks, all at the same step (see `_stop_agreed`).
    self._stop_flag = None
    if single_host:
      with tf.device("/cpu:0"):
        self._stop_flag = tf.Variable(False, trainable=False, name="stop_requested")
    # The same builder as bench/: the step measured there is the step trained here.
    parts = build_components(config, self.strategy, stop_flag=self._stop_flag)
    self.generator, self.discriminator = parts.generator, parts.discriminator
    self.g_optimizer, self.d_optimizer = parts.g_optimizer, parts.d_optimizer
    self.step, self.rng = parts.step, parts.rng
    self.ema_generator, self.ema = parts.ema_generator, parts.ema
    self.train_step = parts.train_step
    self.checkpoint = run_dir.make_checkpoint(
        self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
        self.ema_generator, self.step, self.rng)
    # Restores without the data position, which is restored on its own (see `restore`).
    self._model_checkpoint = run_dir.make_checkpoint(
        self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
        self.ema_generator, self.step, self.rng)
    # The data position is checkpointed in deterministic single-worker runs
    # only: a multi-worker chief would save its own shard's position for all.
    self._checkpoint_data = runtime.deterministic and single_host
    self._input = None
    # Every worker of a multi-worker run executes this code on the same
    # model_dir, but only the chief may write there: the others still save
    # (saving may need every worker, see TF's distributed_file_utils), into a
    # scratch directory that `train` deletes.
    self.is_chief = self.strategy.extended.should_checkpoint
    self.write_dir = model_dir if self.is_chief else os.path.join(
        model_dir, f"workertemp_{self.strategy.cluster_resolver.task_id}")
    self.checkpoint_dir = os.path.join(model_dir, run_dir.CHECKPOINT_DIR)
    # Every worker restores from the chief's checkpoints.
    self.manager = self._open_manager(self.checkpoint_dir, config.train.keep_checkpoints,
                                      repair=self.is_chief)
    self._save_manager = self.manager if self.is_chief else tf.train.CheckpointManager(
        self.checkpoint, os.path.join(self.write_dir, run_dir.CHECKPOINT_DIR), max_to_keep=1,
        step_counter=self.step)
    self.dataset_info = dict(dataset_info or {})
    self._make_dataset = make_dataset
    self._sample_inputs = samples.class_grid_inputs(
        config.model.num_classes, config.model.z_dim, seed=runtime.seed)
    self._sample_fn = tf.function(
        lambda z, labels: self.sample_generator(z, labels, training=False))
    float_variables = [v for v in self._state_variables() if tf.as_dtype(v.dtype).is_floating]
    self._state_finite = tf.function(
        lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in float_variables]))

  @property
  def sample_generator(self):
    """The generator used for samples and export: the weight average when kept."""
    return self.ema_generator if self.ema_generator is not None else self.generator

  def _state_variables(self):
    models = [self.generator, self.discriminator] + (
        [self.ema_generator] if self.ema_generator is not None else [])
    return ([v for model in models for v in model.variables] + list(self.g_optimizer.variables)
            + list(self.d_optimizer.variables))

  def _open_manager(self, directory, max_to_keep, repair):
    """The CheckpointManager of `directory`, rebuilding a lost or unreadable `checkpoint` file.

    The state file lists the complete checkpoints. When it is garbled, or
    missing next to checkpoint files, the chief keeps a garbled one as
    checkpoint.unreadable and writes a new one from the ckpt-<step>.index
    files on disk, which `restore` then tries newest first.
    """
    def open_manager():
      return tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep,
                                        step_counter=self.step)
    try:
      manager, reason = open_manager(), None
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as error:
      manager, reason = None, f"cannot be read ({_first_line(error)})"
    found = run_dir.checkpoints_on_disk(directory)
    if manager is not None and (manager.checkpoints or not found):
      return manager
    state = os.path.join(directory, "checkpoint")
    self.log(f"checkpoint state file {state} {reason or 'is missing'}; using the {len(found)} "
             "checkpoint(s) found next to it")
    if not repair:
      # Another worker's manager: it never saves, and `restore` lists the files itself.
      return tf.train.CheckpointManager(self.checkpoint, os.path.join(
          self.write_dir, run_dir.CHECKPOINT_DIR), max_to_keep=1, step_counter=self.step)
    if reason:
      tf.io.gfile.rename(state, state + ".unreadable", overwrite=True)
    if found:
      # Timestamps after last_preserved_timestamp: the manager rotates these out as usual.
      times = [tf.io.gfile.stat(path + ".index").mtime_nsec / 1e9 for path in found]
      tf.compat.v1.train.update_checkpoint_state(
          directory, found[-1], all_model_checkpoint_paths=found,
          all_model_checkpoint_timestamps=times, last_preserved_timestamp=min(times) - 1.0)
    return open_manager()

  def _checkpoint_candidates(self):
    """Checkpoint prefixes to restore from, newest first, read afresh from the chief's directory.

    Read each time rather than taken from `self.manager`: on other workers
    that manager does not see the checkpoints the chief has saved since.
    """
    try:
      state = tf.train.get_checkpoint_state(self.checkpoint_dir)
    except (ValueError, UnicodeDecodeError, tf.errors.OpError):
      state = None
    if state is not None and state.all_model_checkpoint_paths:
      paths = list(state.all_model_checkpoint_paths)
    else:
      # No state file, or an unreadable one: the files on disk.
      paths = run_dir.checkpoints_on_disk(self.checkpoint_dir)
    return list(reversed(paths))

  def latest_checkpoint(self):
    """The newest checkpoint prefix in the run directory, or None."""
    candidates = self._checkpoint_candidates()
    return candidates[0] if candidates else None

  def _data_key(self):
    """The checkpoint name of the data position: differs when the batches would differ."""
    settings = json.dumps([self.config.data.__dict__, self.config.runtime.seed,
                           self.strategy.num_replicas_in_sync, self.per_replica_batch],
                          sort_keys=True, default=str)
    return f"{_DATA_ITERATOR}_{hashlib.sha256(settings.encode()).hexdigest()[:12]}"

  def restore(self):
    """Restores the newest readable checkpoint; returns its step (0 when starting fresh).

    Checkpoints that cannot be read (truncated, garbled, another model) are
    reported and skipped for the next older one. A checkpoint of a run
    without a weight average restores into one with it: the average starts
    as a copy of the restored generator. The learning rates are the
    config's, not the checkpoint's (Keras saves them with the optimizer).
    In deterministic runs the data position is restored too when the
    checkpoint holds one for the same data settings; otherwise the data
    order restarts from the seed.

    Raises:
      TrainingError: checkpoints exist but none can be read. They are left
        as they are.
    """
    checkpoints = self._checkpoint_candidates()
    reasons = []
    for index, path in enumerate(checkpoints):
      try:
        notes = self._restore_model(path)
      except Exception as error:  # pylint: disable=broad-except
        # OpErrors, ValueErrors, AssertionErrors and, for a truncated data
        # file, IndexError: all mean this checkpoint cannot be read.
        older = "; trying an older one" if index + 1 < len(checkpoints) else ""
        reasons.append(_first_line(error))
        self.log(f"checkpoint {path} cannot be read ({reasons[-1]}){older}")
        continue
      self.log(f"resumed from {path} at step {int(self.step.numpy())}")
      for note in notes:
        self.log(note)
      self._adopt_learning_rates()
      if self._input is not None:
        self._restore_data_position(path)
      return int(self.step.numpy())
    if checkpoints:
      raise TrainingError(
          f"none of the {len(checkpoints)} checkpoint(s) in {self.checkpoint_dir} can be read "
          f"(newest: {reasons[0]}); they are left untouched; to train afresh, pass another "
          "--model_dir")
    return 0

  def _restore_model(self, path):
    """Restores everything but the data position from `path`; returns lines to log.

    An AssertionError of `assert_existing_objects_matched` means the
    checkpoint lacks some of our objects; if it lacks only the weight
    average (the run was trained without one) the rest is restored and the
    average copied from the generator.
    """
    try:
      self._model_checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
      return []
    except AssertionError:
      if self.ema_generator is None:
        raise
      without_average = run_dir.make_checkpoint(
          self.generator, self.discriminator, self.g_optimizer, self.d_optimizer, None, self.step,
          self.rng)
      without_average.restore(path).assert_existing_objects_matched().expect_partial()
    self.ema.copy()
    return [f"the checkpoint has no generator weight average (the run had train.ema_decay=0): "
            f"it starts now as a copy of the generator, with decay {self.config.train.ema_decay}"]

  def _adopt_learning_rates(self):
    """Sets the optimizers' learning rates to the config's after a restore."""
    rates = ((self.g_optimizer, self.config.optimizer.g_learning_rate),
             (self.d_optimizer, self.config.optimizer.d_learning_rate))
    for optimizer, rate in rates:
      for inner in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        variable = getattr(inner, "learning_rate", None) if inner is not None else None
        if isinstance(variable, tf.Variable) or hasattr(variable, "assign"):
          variable.assign(rate)

  def _restore_data_position(self, path):
    key = self._data_key()
    try:
      names = [name for name, _ in tf.train.list_variables(path)]
    except (tf.errors.OpError, ValueError):
      names = []
    if not any(name.startswith(key + "/") for name in names):
      other = any(name.startswith(_DATA_ITERATOR) for name in names)
      reason = ("was saved for other data, batch, replica or seed settings" if other
                else "is not in the checkpoint")
      self.log(f"the data position {reason}; the data order starts afresh from the seed, so "
               "this run will not repeat an uninterrupted one exactly")
      return
    try:
      tf.train.Checkpoint(**{key: self._input.iterator}).restore(
          path).assert_existing_objects_matched()
    except Exception as error:  # pylint: disable=broad-except
      raise TrainingError(f"cannot restore the data position from {path}: "
                          f"{_first_line(error)}") from None
    self.log("restored the data position")

  def write_samples(self):
    """Writes the fixed-z sample grid as PNG and to TensorBoard; returns the PNG path."""
    z, labels, columns = self._sample_inputs
    images = self._sample_fn(tf.constant(z), tf.constant(labels) if self.config.model.num_classes
                             else None)
    names = (samples.row_names(labels[::columns], self.dataset_info.get("class_names"))
             if self.config.model.num_classes else None)
    grid = samples.labelled_grid(images.numpy(), columns, names)
    step = int(self.step.numpy())
    path = os.path.join(self.write_dir, run_dir.SAMPLE_DIR, f"step_{step:08d}.png")
    with storage.writing(f"sample grid {os.path.basename(path)}", os.path.dirname(path),
                         lambda: storage.remove_quietly(path + ".tmp"), self._intact()):
      samples.write_png(path, grid)
      tf.summary.image("samples", grid[None], step=step)
      tf.summary.flush()
    return path

  def _intact(self):
    """The end of a write-failure message: what is safe, and how to go on."""
    return (f"the checkpoints are intact (newest: {self.latest_checkpoint()}); free some space and "
            "run the same command to resume")

  def _write_summaries(self, metrics, images_per_second):
    # Flushed here so that a full disk shows up now, as one line, rather
    # than at some later write or when the writer closes.
    with storage.writing("summaries", os.path.join(self.write_dir, run_dir.SUMMARY_DIR),
                         advice=self._intact()):
      self._write_summary_values(metrics, images_per_second)
      tf.summary.flush()

  def _write_summary_values(self, metrics, images_per_second):
    step = int(self.step.numpy())
    for name, value in metrics.items():
      if name not in ("finite", "steps"):
        tf.summary.scalar(f"losses/{name}", value, step=step)
    tf.summary.scalar("speed/images_per_second", images_per_second, step=step)
    for model in (self.generator, self.discriminator):
      for variable in model.variables:
        path = variable.path
        if path.endswith("/sigma"):
          tf.summary.scalar(f"sigma/{path[:-len('/sigma')]}", variable, step=step)
        elif "non_local" in path and path.endswith("/gamma"):
          tf.summary.scalar(f"attention_gamma/{path}", variable, step=step)

  def _save(self, reason=""):
    """Saves a checkpoint, after checking that no variable holds a NaN or Inf.

    CheckpointManager writes the data and index files first and then
    replaces the `checkpoint` state file atomically, so a kill at any moment
    leaves the state file naming complete checkpoints only.
    """
    if not bool(self._state_finite()):
      raise DivergenceError(
          f"a weight, weight average or optimizer slot is NaN or Inf at step "
          f"{int(self.step.numpy())}; not saving it. The last good checkpoint is "
          f"{self.latest_checkpoint()}")
    step = int(self.step.numpy())
    directory = os.path.join(self.write_dir, run_dir.CHECKPOINT_DIR)
    with storage.writing(f"checkpoint ckpt-{step}", directory,
                         lambda: self._remove_failed_save(directory, step),
                         "removed its partial files; " + self._intact()):
      path = self._save_manager.save(checkpoint_number=self.step)
    self._saved_step = step
    self.log(f"saved checkpoint {path}{reason}")
    return path

  def _remove_stale_temp_files(self):
    """Deletes the <prefix>_temp folders a save killed mid-write leaves; never listed, never read."""
    if not self.is_chief or not tf.io.gfile.isdir(self.checkpoint_dir):
      return
    for name in tf.io.gfile.listdir(self.checkpoint_dir):
      name = name.rstrip("/")
      if name.startswith("ckpt-") and name.endswith("_temp"):
        tf.io.gfile.rmtree(os.path.join(self.checkpoint_dir, name))
        self.log(f"removed {name}, left by a save that was cut short")

  def _remove_failed_save(self, directory, step):
    """Deletes what a failed save of `step` left: its _temp folder, its unlisted files, state temps.

    Files of a checkpoint the state file lists are kept: they are complete.
    """
    listed = set(self._save_manager.checkpoints)
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

  def _reseed(self, step):
    """Reseeds the noise after a rollback, or the restored state would diverge the same way."""
    text = f"{self.config.runtime.seed}:{step}:{self.rollbacks}"
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")
    self.rng.reset_from_seed(seed)
    return seed

  def _diverged(self, what):
    """Raises DivergenceError, or rolls back to the newest checkpoint under on_nan="rollback".

    Returns:
      The step rolled back to.
    """
    latest = self.latest_checkpoint()
    if self.on_nan == "rollback":
      if latest is None:
        raise DivergenceError(f"{what}; no checkpoint to roll back to")
      if self.rollbacks >= self.max_rollbacks:
        raise DivergenceError(
            f"{what}, after {self.rollbacks} rollback(s) (the cap, --max_rollbacks); the last good "
            f"checkpoint is {latest}; lower the learning rates or resume from it")
      self.rollbacks += 1
      restored = self.restore()
      self._saved_step = restored
      seed = self._reseed(restored)
      self.log(f"{what}: rolled back to step {restored} (rollback {self.rollbacks} of "
               f"{self.max_rollbacks}) and reseeded the noise with {seed}")
      return restored
    raise DivergenceError(f"{what}; the last good checkpoint is {latest}; lower the learning rates "
                          "or resume from it (--on_nan=rollback retries from it automatically)")

  def _stop_agreed(self, stop, vote):
    """Whether to stop now: this process's signal, or on multi-worker runs any worker's.

    Workers vote in a collective between chunks, so all stop (and save
    together) at the same step.
    """
    if not self._multi_worker:
      return stop.signal is not None
    return float(vote(tf.constant(1.0 if stop.signal is not None else 0.0))) > 0

  def train(self, stop_request=None):
    """Runs to `train.train_steps`; returns the last chunk's metrics.

    SIGTERM and SIGINT end the run after the step in flight (single host)
    or the chunk in flight (multi-worker, TPU) with a checkpoint; the
    returned dict then has "stopped_by_signal" set to the signal's name.

    Args:
      stop_request: an object whose `signal` attribute names a stop signal
        that arrived before training, e.g. during start-up, or None.

    Raises:
      DivergenceError: on a NaN or Inf loss or weight (after the rollbacks
        of on_nan="rollback"). The checkpoints on disk are left as they
        were: a poisoned state is never saved.
      StepError: a TensorFlow error inside a chunk, e.g. an undecodable
        image; the checkpoints are left as they were.
      TrainingError: no readable checkpoint in a non-empty directory.
    """
    try:
      return self._train(stop_request)
    finally:
      if not self.is_chief and tf.io.gfile.exists(self.write_dir):
        tf.io.gfile.rmtree(self.write_dir)

  def _make_input(self):
    config = self.config
    if self._checkpoint_data:
      dataset = self._make_dataset(
          tf.distribute.InputContext(num_replicas_in_sync=self.strategy.num_replicas_in_sync),
          self.per_replica_batch)
      self._input = _CheckpointableInput(self.strategy, dataset)
      setattr(self.checkpoint, self._data_key(), self._input.iterator)
      return self._input
    dataset = self.strategy.distribute_datasets_from_function(
        lambda context: self._make_dataset(context, context.get_per_replica_batch_size(
            config.train.batch_size)))
    return iter(dataset)

  def _train(self, stop_request):
    config = self.config
    tf.io.gfile.makedirs(os.path.join(self.write_dir, run_dir.SAMPLE_DIR))
    self._remove_stale_temp_files()
    iterator = self._make_input()
    start_step = self.restore()
    # The same on every worker (all restore the chief's checkpoint), unlike
    # each worker's CheckpointManager state.
    self._saved_step = start_step if self.latest_checkpoint() else None
    run_dir.write_json(os.path.join(self.write_dir, run_dir.CONFIG_FILE), config.to_dict())
    if self.dataset_info:
      run_dir.write_json(os.path.join(self.write_dir, run_dir.DATASET_FILE), self.dataset_info)
    total = config.train.train_steps
    if start_step >= total:
      self.log(f"step {start_step} already reaches train_steps={total}; nothing to train")
      return {}
    writer = tf.summary.create_file_writer(os.path.join(self.write_dir, run_dir.SUMMARY_DIR))
    vote = tf.function(lambda flag: self.strategy.reduce(
        tf.distribute.ReduceOp.SUM, self.strategy.run(tf.identity, args=(flag,)), axis=None))
    metrics, step = {}, start_step
    timer_step, timer = step, time.perf_counter()
    run_start = timer
    if self._stop_flag is not None:
      self._stop_flag.assign(False)
    stop = StopRequest(self._stop_flag, initial=stop_request, log=self.log)
    # Closed on the way out: events are on disk when `train` returns.
    with contextlib.closing(writer), writer.as_default(), stop:
      if start_step == 0:
        self.write_samples()
      if self.on_nan == "rollback" and self._saved_step is None:
        self._save(" (the state a rollback returns to)")
      replicas = self.strategy.num_replicas_in_sync
      plural = "s" if replicas > 1 else ""
      self.log(f"{type(self.strategy).__name__} with {replicas} replica{plural} "
               f"of {self.per_replica_batch} images")
      interruptible = "after the step in flight" if self._stop_flag is not None else (
          "after the chunk in flight")
      self.log(f"training steps {start_step}-{total}, {config.train.steps_per_loop} per compiled "
               f"chunk; SIGTERM or SIGINT saves a checkpoint {interruptible} and exits")
      stopped = False
      while step < total:
        if self._stop_agreed(stop, vote):
          stopped = True
          break
        chunk = min(config.train.steps_per_loop, total - step)
        try:
          output = self.train_step.loop(iterator, tf.constant(chunk, tf.int32))
          metrics = {k: float(v.numpy()) for k, v in output.items()}
        except tf.errors.OpError as error:
          raise StepError(
              f"training failed after step {step}: {_first_line(error)}; the checkpoints are "
              f"intact (newest: {self.latest_checkpoint()})", error, step) from error
        previous, step = step, int(self.step.numpy())
        if not metrics["finite"]:
          step = self._diverged(
              f"non-finite loss or weight between steps {previous} and {step} "
              f"(d_loss={metrics['d_loss']:.4g}, g_loss={metrics['g_loss']:.4g})")
          timer_step, timer = step, time.perf_counter()
          continue
        if step == previous:  # Stopped before the first step of the chunk.
          continue
        now = time.perf_counter()
        steps_per_second = (step - timer_step) / max(now - timer, 1e-9)
        images_per_second = steps_per_second * config.train.batch_size
        timer_step, timer = step, now
        self.log(f"step {step}/{total} ({100.0 * step / total:.1f}%)  "
                 f"{steps_per_second:.2f} steps/s  {images_per_second:.1f} images/s  "
                 f"ETA {_format_eta((total - step) / max(steps_per_second, 1e-9))}  "
                 f"d_loss {metrics['d_loss']:.3f}  g_loss {metrics['g_loss']:.3f}  "
                 f"D(real) {metrics['d_real']:.3f}  D(fake) {metrics['d_fake']:.3f}")

        def crossed(every):
          return step // every > previous // every or step == total
        if crossed(config.train.summary_every):
          self._write_summaries(metrics, images_per_second)
        if crossed(config.train.sample_every):
          self.write_samples()
        if crossed(config.train.checkpoint_every):
          # The chunk's check covers the losses and trained weights; the
          # weight average and optimizer slots are checked before a save.
          if not bool(self._state_finite()):
            step = self._diverged(f"a NaN or Inf weight average or optimizer slot at step {step}")
            timer_step, timer = step, time.perf_counter()
            continue
          self._save()
      if stopped:
        if self._saved_step == step:
          self.log(f"the checkpoint of step {step} is already saved")
        else:
          self._save(f" on {stop.signal or 'a stop request'}")
        self.log(f"stopped by {stop.signal or 'another worker'} at step {step}; run the same "
                 "command to resume")
    elapsed = time.perf_counter() - run_start
    self.log(f"trained steps {start_step}-{step} in {elapsed:.0f} s")
    metrics["stopped_by_signal"] = (stop.signal or "another worker") if stopped else None
    return metrics
