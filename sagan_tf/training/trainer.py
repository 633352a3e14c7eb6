"""The host side of training: set-up, resume, the loop over compiled chunks, checkpoints, samples."""

import contextlib
import dataclasses
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from sagan_tf import samples
from sagan_tf.models.build import build_from_config
from sagan_tf.training import distribute, run_dir
from sagan_tf.training.ema import WeightAverage
from sagan_tf.training.step import TrainStep, make_optimizers


class TrainingError(RuntimeError):
  """Training cannot go on: divergence, a mismatched run directory, a bad batch split."""


class _StopRequest:
  """Turns SIGTERM/SIGINT (preemption, Ctrl-C) into a flag the loop checks between chunks."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *args):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _format_eta(seconds):
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


def check_resumable(config, model_dir):
  """Refuses to resume a run directory whose saved model or data differ from `config`."""
  saved = run_dir.read_config(model_dir)
  differences = [
      f"model.{f.name}: saved {getattr(saved.model, f.name)!r}, now {getattr(config.model, f.name)!r}"
      for f in dataclasses.fields(saved.model)
      if getattr(saved.model, f.name) != getattr(config.model, f.name)]
  if saved.data.dataset != config.data.dataset:
    differences.append(f"data.dataset: saved {saved.data.dataset!r}, now {config.data.dataset!r}")
  if differences:
    raise TrainingError(
        f"{model_dir} holds a run with another configuration ({'; '.join(differences)}); "
        "use a new --model_dir or the same settings")


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
  """

  def __init__(self, config, model_dir, make_dataset, dataset_info=None, log=print):
    self.config = config
    self.model_dir = model_dir
    self.log = log
    runtime = config.runtime
    if runtime.deterministic:
      tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(runtime.seed)
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16",
              "float16": "mixed_float16"}[runtime.mixed_precision]
    self.strategy = distribute.get_strategy(runtime.strategy, runtime.tpu)
    replicas = self.strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
      raise TrainingError(f"batch size {config.train.batch_size} does not divide over {replicas} "
                          "replicas; use a multiple of the replica count")
    self.per_replica_batch = config.train.batch_size // replicas
    with self.strategy.scope():
      self.generator, self.discriminator = build_from_config(config.model, dtype=policy)
      self.g_optimizer, self.d_optimizer = make_optimizers(config.optimizer, runtime.mixed_precision)
      self.g_optimizer.build(self.generator.trainable_variables)
      self.d_optimizer.build(self.discriminator.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
      self.rng = tf.random.Generator.from_seed(runtime.seed)
      self.ema_generator, self.ema = None, None
      if config.train.ema_decay > 0:
        self.ema_generator, _ = build_from_config(config.model, dtype=policy)
        self.ema = WeightAverage(self.generator, self.ema_generator, config.train.ema_decay,
                                 config.train.ema_start_step)
        self.ema.copy()
      self.train_step = TrainStep(self.generator, self.discriminator, self.g_optimizer,
                                  self.d_optimizer, self.strategy, config.train, self.rng, self.step,
                                  ema=self.ema, jit_compile=runtime.jit_compile)
    self.checkpoint = run_dir.make_checkpoint(
        self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
        self.ema_generator, self.step, self.rng)
    # Every worker of a multi-worker run executes this code on the same
    # model_dir, but only the chief may write there: the others still save
    # (saving may need every worker, see TF's distributed_file_utils), into a
    # scratch directory that `train` deletes.
    self.is_chief = self.strategy.extended.should_checkpoint
    self.write_dir = model_dir if self.is_chief else os.path.join(
        model_dir, f"workertemp_{self.strategy.cluster_resolver.task_id}")
    # Every worker restores from the chief's checkpoints.
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(model_dir, run_dir.CHECKPOINT_DIR),
        max_to_keep=config.train.keep_checkpoints, step_counter=self.step)
    self._save_manager = self.manager if self.is_chief else tf.train.CheckpointManager(
        self.checkpoint, os.path.join(self.write_dir, run_dir.CHECKPOINT_DIR), max_to_keep=1,
        step_counter=self.step)
    self.dataset_info = dict(dataset_info or {})
    self._make_dataset = make_dataset
    self._sample_inputs = samples.class_grid_inputs(
        config.model.num_classes, config.model.z_dim, seed=runtime.seed)
    self._sample_fn = tf.function(
        lambda z, labels: self.sample_generator(z, labels, training=False))

  @property
  def sample_generator(self):
    """The generator used for samples and export: the weight average when kept."""
    return self.ema_generator if self.ema_generator is not None else self.generator

  def restore(self):
    """Restores the newest readable checkpoint; returns its step (0 when starting fresh)."""
    checkpoints = list(reversed(self.manager.checkpoints))
    for index, path in enumerate(checkpoints):
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (tf.errors.OpError, ValueError, AssertionError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        older = "; trying an older one" if index + 1 < len(checkpoints) else ""
        self.log(f"checkpoint {path} cannot be read ({reason}){older}")
        continue
      self.log(f"resumed from {path} at step {int(self.step.numpy())}")
      return int(self.step.numpy())
    if checkpoints:
      raise TrainingError(f"no checkpoint in {self.manager.directory} can be read; move the "
                          "directory away to start afresh")
    return 0

  def write_samples(self):
    """Writes the fixed-z sample grid as PNG and to TensorBoard; returns the PNG path."""
    z, labels, columns = self._sample_inputs
    images = self._sample_fn(tf.constant(z), tf.constant(labels) if self.config.model.num_classes
                             else None)
    grid = samples.image_grid(samples.to_uint8(images.numpy()), columns)
    step = int(self.step.numpy())
    path = os.path.join(self.write_dir, run_dir.SAMPLE_DIR, f"step_{step:08d}.png")
    samples.write_png(path, grid)
    tf.summary.image("samples", grid[None], step=step)
    return path

  def _write_summaries(self, metrics, images_per_second):
    step = int(self.step.numpy())
    for name, value in metrics.items():
      if name != "finite":
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
    path = self._save_manager.save(checkpoint_number=self.step)
    self.log(f"saved checkpoint {path}{reason}")
    return path

  def train(self):
    """Runs to `train.train_steps`; returns the last chunk's metrics.

    Raises:
      TrainingError: on a NaN or Inf loss or weight. The checkpoints on disk
        are left as they were: a poisoned state is never saved.
    """
    try:
      return self._train()
    finally:
      if not self.is_chief and tf.io.gfile.exists(self.write_dir):
        tf.io.gfile.rmtree(self.write_dir)

  def _train(self):
    config = self.config
    tf.io.gfile.makedirs(os.path.join(self.write_dir, run_dir.SAMPLE_DIR))
    start_step = self.restore()
    run_dir.write_json(os.path.join(self.write_dir, run_dir.CONFIG_FILE), config.to_dict())
    if self.dataset_info:
      run_dir.write_json(os.path.join(self.write_dir, run_dir.DATASET_FILE), self.dataset_info)
    total = config.train.train_steps
    if start_step >= total:
      self.log(f"step {start_step} already reaches train_steps={total}; nothing to train")
      return {}
    dataset = self.strategy.distribute_datasets_from_function(
        lambda context: self._make_dataset(context, context.get_per_replica_batch_size(
            config.train.batch_size)))
    iterator = iter(dataset)
    writer = tf.summary.create_file_writer(os.path.join(self.write_dir, run_dir.SUMMARY_DIR))
    per_replica_batch = tf.constant(self.per_replica_batch, tf.int32)
    metrics, step = {}, start_step
    timer_step, timer = step, time.perf_counter()
    run_start = timer
    # Closed on the way out: events are on disk when `train` returns.
    with contextlib.closing(writer), writer.as_default(), _StopRequest() as stop:
      if start_step == 0:
        self.write_samples()
      while step < total and stop.signal is None:
        chunk = min(config.train.steps_per_loop, total - step)
        output = self.train_step.loop(iterator, tf.constant(chunk, tf.int32), per_replica_batch)
        metrics = {k: float(v.numpy()) for k, v in output.items()}
        previous, step = step, int(self.step.numpy())
        if not metrics["finite"]:
          raise TrainingError(
              f"non-finite loss or weight between steps {previous} and {step} "
              f"(d_loss={metrics['d_loss']:.4g}, g_loss={metrics['g_loss']:.4g}); "
              f"the last good checkpoint is {self.manager.latest_checkpoint}; "
              "lower the learning rates or resume from it")
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
          self._save()
      if stop.signal is not None:
        self._save(f" on {stop.signal}")
        self.log(f"stopped by {stop.signal} at step {step}; run the same command to resume")
    elapsed = time.perf_counter() - run_start
    self.log(f"trained steps {start_step}-{step} in {elapsed:.0f} s")
    metrics["stopped_by_signal"] = stop.signal
    return metrics
