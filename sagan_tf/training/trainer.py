"""The Trainer: builds one experiment, resumes it, and runs the loop over compiled chunks.

The concerns it calls on live next to it: `signals` (SIGTERM, SIGINT),
`checkpointing` (checkpoint files), `inputs` (batches, data position),
`summaries` (progress, TensorBoard), `divergence` (NaN policy), `errors`,
`distribute` (the strategy).
"""

import contextlib
import os
import time

import tensorflow as tf

from sagan_tf.training import (checkpointing, distribute, inputs, periodic_eval, precision, run_dir,
                               summaries)
from sagan_tf.training.components import build_components
from sagan_tf.training.divergence import RollbackPolicy
# Re-exported: train.py, bench/ and the tests reach them here.
from sagan_tf.training.distribute import make_strategy  # pylint: disable=unused-import
from sagan_tf.training.errors import (  # pylint: disable=unused-import
    DivergenceError, StepError, TrainingError, out_of_memory_message)
from sagan_tf.training.signals import StopRequest


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
    feature_network: a callable returning (network, description) in place of
      the Inception network of the evaluations (tests use a small stand-in).
  """

  def __init__(self, config, model_dir, make_dataset, dataset_info=None, log=print, on_nan="stop",
               max_rollbacks=3, feature_network=None):
    self.rollback_policy = RollbackPolicy(on_nan, max_rollbacks, config.runtime.seed)
    self.config = config
    self.model_dir = model_dir
    self.log = log
    self._saved_step = None
    self.dataset_info = dict(dataset_info or {})
    self._make_dataset = make_dataset
    self._input = None
    self._set_up_strategy(config)
    self.config = config = precision.resolve_config(config, log, self.strategy)
    self._build_models(config)
    self._set_up_checkpoints(config)
    # Every train.eval_every steps; attaches the best-FID record to the checkpoint.
    self.evaluator = periodic_eval.PeriodicEvaluator(
        config, self.sample_generator, self.checkpoint, self.step, model_dir=model_dir,
        write_dir=self.write_dir, strategy=self.strategy, is_chief=self.is_chief, log=log,
        feature_network=feature_network)
    self.sample_grid = summaries.SampleGrid(
        self.sample_generator, config.model.num_classes, config.model.z_dim,
        self.dataset_info.get("class_names"), seed=config.runtime.seed)
    float_variables = [v for v in self._state_variables() if tf.as_dtype(v.dtype).is_floating]
    self._state_finite = tf.function(autograph=False)(
        lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in float_variables]))

  def _set_up_strategy(self, config):
    """The strategy, the per-replica batch, and the stop flag the compiled loop reads."""
    if config.runtime.deterministic:
      tf.config.experimental.enable_op_determinism()
    self.strategy = distribute.make_strategy(config.runtime)
    replicas = self.strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
      raise TrainingError(f"batch size {config.train.batch_size} does not divide over {replicas} "
                          "replicas; use a multiple of the replica count")
    self.per_replica_batch = config.train.batch_size // replicas
    self._multi_worker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    self._single_host = not self._multi_worker and not isinstance(
        self.strategy, tf.distribute.TPUStrategy)
    # Read by the compiled loop of single-host runs, set from a signal-watching
    # thread. Multi-worker and TPU runs pass no flag: a worker leaving a chunk
    # early would leave the others waiting in a collective, so they stop
    # between chunks, all at the same step (see `_stop_agreed`).
    self._stop_flag = None
    if self._single_host:
      with tf.device("/cpu:0"):
        self._stop_flag = tf.Variable(False, trainable=False, name="stop_requested")

  def _build_models(self, config):
    # The same builder as bench/: the step measured there is the step trained here.
    parts = build_components(config, self.strategy, stop_flag=self._stop_flag)
    self.generator, self.discriminator = parts.generator, parts.discriminator
    self.g_optimizer, self.d_optimizer = parts.g_optimizer, parts.d_optimizer
    self.step, self.rng = parts.step, parts.rng
    self.ema_generator, self.ema = parts.ema_generator, parts.ema
    self.train_step = parts.train_step

  def _set_up_checkpoints(self, config):
    self.checkpoint = self._make_checkpoint(self.ema_generator)
    # Restores without the data position, which is restored on its own (see `restore`).
    self._model_checkpoint = self._make_checkpoint(self.ema_generator)
    # The data position is checkpointed in deterministic single-worker runs
    # only: a multi-worker chief would save its own shard's position for all.
    self._checkpoint_data = config.runtime.deterministic and self._single_host
    # Every worker of a multi-worker run executes this code on the same
    # model_dir, but only the chief may write there: the others write into a
    # scratch directory that `train` deletes.
    self.is_chief = self.strategy.extended.should_checkpoint
    self.write_dir = self.model_dir if self.is_chief else os.path.join(
        self.model_dir, f"workertemp_{self.strategy.cluster_resolver.task_id}")
    self.checkpoints = checkpointing.RunCheckpoints(
        self.checkpoint, self.step, self.model_dir, self.write_dir,
        config.train.keep_checkpoints, self.is_chief, self.log)

  def _make_checkpoint(self, ema_generator):
    return run_dir.make_checkpoint(self.generator, self.discriminator, self.g_optimizer,
                                   self.d_optimizer, ema_generator, self.step, self.rng)

  @property
  def sample_generator(self):
    """The generator used for samples and export: the weight average when kept."""
    return self.ema_generator if self.ema_generator is not None else self.generator

  @property
  def manager(self):
    """The tf.train.CheckpointManager of the run's checkpoints."""
    return self.checkpoints.manager

  @property
  def checkpoint_dir(self):
    """model_dir/checkpoints, which every worker restores from."""
    return self.checkpoints.directory

  def _state_variables(self):
    models = [self.generator, self.discriminator] + (
        [self.ema_generator] if self.ema_generator is not None else [])
    return ([v for model in models for v in model.variables] + list(self.g_optimizer.variables)
            + list(self.d_optimizer.variables))

  def latest_checkpoint(self):
    """The newest checkpoint prefix in the run directory, or None."""
    return self.checkpoints.latest()

  def _data_key(self):
    return inputs.data_key(self.config, self.strategy.num_replicas_in_sync, self.per_replica_batch)

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
    path = self.checkpoints.restore_newest_readable(self._restore_model)
    if path is None:
      return 0
    self.evaluator.restore(path)
    checkpointing.adopt_learning_rates(
        ((self.g_optimizer, self.config.optimizer.g_learning_rate),
         (self.d_optimizer, self.config.optimizer.d_learning_rate)))
    if self._input is not None:
      inputs.restore_data_position(self._input.iterator, self._data_key(), path, self.log)
    return int(self.step.numpy())

  def _restore_model(self, path):
    """Restores everything but the data position from `path`; returns lines to log."""
    return checkpointing.restore_model(
        self._model_checkpoint, lambda: self._make_checkpoint(None), self.ema, path,
        self.config.train.ema_decay)

  def write_samples(self):
    """Writes the fixed-z sample grid as PNG and to TensorBoard; returns the PNG path."""
    return self.sample_grid.write(int(self.step.numpy()), self.write_dir, self._intact())

  def _intact(self):
    """The end of a write-failure message: what is safe, and how to go on."""
    return (f"the checkpoints are intact (newest: {self.latest_checkpoint()}); free some space and "
            "run the same command to resume")

  def _write_summaries(self, metrics, images_per_second):
    summaries.write_scalars(self.write_dir, int(self.step.numpy()), metrics, images_per_second,
                            (self.generator, self.discriminator), self._intact())

  def _save(self, reason=""):
    """Saves a checkpoint, after checking that no variable holds a NaN or Inf."""
    if not bool(self._state_finite()):
      raise DivergenceError(
          f"a weight, weight average or optimizer slot is NaN or Inf at step "
          f"{int(self.step.numpy())}; not saving it. The last good checkpoint is "
          f"{self.latest_checkpoint()}")
    path = self.checkpoints.save(self._intact())
    self._saved_step = int(self.step.numpy())
    self.log(f"saved checkpoint {path}{reason}")
    return path

  @property
  def rollbacks(self):
    """Rollbacks made so far in this process."""
    return self.rollback_policy.rollbacks

  def _diverged(self, what):
    """Raises DivergenceError, or rolls back to the newest checkpoint under on_nan="rollback".

    Returns:
      The step rolled back to.
    """
    policy = self.rollback_policy
    policy.allow_rollback(what, self.latest_checkpoint())
    restored = self.restore()
    self._saved_step = restored
    seed = policy.reseed(self.rng, restored)
    self.log(f"{what}: rolled back to step {restored} (rollback {policy.rollbacks} of "
             f"{policy.max_rollbacks}) and reseeded the noise with {seed}")
    return restored

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
    self._input = None
    iterator = inputs.make_input(self.strategy, self._make_dataset, self.config.train.batch_size,
                                 self._checkpoint_data)
    if self._checkpoint_data:
      self._input = iterator
      setattr(self.checkpoint, self._data_key(), iterator.iterator)
    return iterator

  def _prepare_run(self):
    """Cleans up, opens the input, restores, writes config.json; returns (iterator, start step)."""
    tf.io.gfile.makedirs(os.path.join(self.write_dir, run_dir.SAMPLE_DIR))
    self.checkpoints.remove_stale_temp_files()
    iterator = self._make_input()
    start_step = self.restore()
    # The same on every worker (all restore the chief's checkpoint), unlike
    # each worker's CheckpointManager state.
    self._saved_step = start_step if self.latest_checkpoint() else None
    run_dir.write_json(os.path.join(self.write_dir, run_dir.CONFIG_FILE), self.config.to_dict())
    if self.dataset_info:
      run_dir.write_json(os.path.join(self.write_dir, run_dir.DATASET_FILE), self.dataset_info)
    return iterator, start_step

  def _start_loop(self, start_step):
    """What comes before the first chunk: step 0's samples, the rollback base, the plan."""
    if start_step == 0:
      self.write_samples()
    if self.rollback_policy.on_nan == "rollback" and self._saved_step is None:
      self._save(" (the state a rollback returns to)")
    replicas = self.strategy.num_replicas_in_sync
    plural = "s" if replicas > 1 else ""
    self.log(f"{type(self.strategy).__name__} with {replicas} replica{plural} "
             f"of {self.per_replica_batch} images")
    interruptible = "after the step in flight" if self._stop_flag is not None else (
        "after the chunk in flight")
    self.log(f"training steps {start_step}-{self.config.train.train_steps}, "
             f"{self.config.train.steps_per_loop} per compiled chunk; SIGTERM or SIGINT saves a "
             f"checkpoint {interruptible} and exits")

  def _run_chunk(self, iterator, step):
    """Runs one compiled chunk from `step`; returns its metrics (floats) and the step reached."""
    chunk = min(self.config.train.steps_per_loop, self.config.train.train_steps - step)
    try:
      output = self.train_step.loop(iterator, tf.constant(chunk, tf.int32))
      metrics = {k: float(v.numpy()) for k, v in output.items()}
    except tf.errors.OpError as error:
      raise StepError(
          f"training failed after step {step}: {run_dir.describe_error(error)}; the checkpoints "
          f"are intact (newest: {self.latest_checkpoint()})", error, step) from error
    return metrics, int(self.step.numpy())

  def _every(self, previous, step, metrics, images_per_second):
    """The work due every so many steps, when the chunk from `previous` to `step` crossed it.

    Returns:
      The step to go on from: `step`, or the step a rollback went back to.
    """
    train = self.config.train

    def crossed(every):
      return step // every > previous // every or step == train.train_steps
    if crossed(train.summary_every):
      self._write_summaries(metrics, images_per_second)
    if crossed(train.sample_every):
      self.write_samples()
    # Before the checkpoint, which then holds the best FID so far.
    if self.evaluator.due(previous, step, train.train_steps):
      self.evaluator.evaluate()
    if crossed(train.checkpoint_every):
      # The chunk's check covers the losses and trained weights; the
      # weight average and optimizer slots are checked before a save.
      if not bool(self._state_finite()):
        return self._diverged(f"a NaN or Inf weight average or optimizer slot at step {step}")
      self._save()
    return step

  def _save_on_stop(self, stop, step):
    if self._saved_step == step:
      self.log(f"the checkpoint of step {step} is already saved")
    else:
      self._save(f" on {stop.signal or 'a stop request'}")
    self.log(f"stopped by {stop.signal or 'another worker'} at step {step}; run the same "
             "command to resume")

  def _train(self, stop_request):
    iterator, start_step = self._prepare_run()
    total = self.config.train.train_steps
    if start_step >= total:
      self.log(f"step {start_step} already reaches train_steps={total}; nothing to train")
      return {}
    writer = tf.summary.create_file_writer(os.path.join(self.write_dir, run_dir.SUMMARY_DIR))
    vote = tf.function(autograph=False)(lambda flag: self.strategy.reduce(
        tf.distribute.ReduceOp.SUM, self.strategy.run(tf.identity, args=(flag,)), axis=None))
    metrics, step, stopped = {}, start_step, False
    speed, run_start = summaries.Speed(step), time.perf_counter()
    if self._stop_flag is not None:
      self._stop_flag.assign(False)
    stop = StopRequest(self._stop_flag, initial=stop_request, log=self.log)
    # Closed on the way out: events are on disk when `train` returns.
    with contextlib.closing(writer), writer.as_default(), stop:
      self._start_loop(start_step)
      while step < total:
        if self._stop_agreed(stop, vote):
          stopped = True
          break
        previous = step
        metrics, step = self._run_chunk(iterator, step)
        if not metrics["finite"]:
          step = self._diverged(
              f"non-finite loss or weight between steps {previous} and {step} "
              f"(d_loss={metrics['d_loss']:.4g}, g_loss={metrics['g_loss']:.4g})")
          speed.restart(step)
          continue
        if step == previous:  # Stopped before the first step of the chunk.
          continue
        steps_per_second = speed.update(step)
        self.log(summaries.progress_line(step, total, steps_per_second,
                                         self.config.train.batch_size, metrics)
                 + self.evaluator.progress_text())
        evaluations = self.evaluator.count
        reached = self._every(previous, step, metrics,
                              steps_per_second * self.config.train.batch_size)
        # Rolled back, or evaluated: the next speed leaves the evaluation out.
        if reached != step or self.evaluator.count != evaluations:
          step = reached
          speed.restart(step)
      if stopped:
        self._save_on_stop(stop, step)
    self.log(f"trained steps {start_step}-{step} in {time.perf_counter() - run_start:.0f} s"
             f"{self.evaluator.summary_text()}")
    metrics["stopped_by_signal"] = (stop.signal or "another worker") if stopped else None
    return metrics
