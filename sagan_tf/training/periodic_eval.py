"""Evaluation during training: FID, KID and IS every `train.eval_every` steps; best checkpoint.

The pieces are evaluate.py's (`sagan_tf.evaluation`): the same sampler,
noise seed, labels, batch sizes, Inception network and cached real
statistics, so that the FID logged at step N equals
`evaluate.py --checkpoint=<model_dir> --checkpoint_step=N
--num_samples=<train.eval_samples> --split=<data.split>` on the same weights.
"""

import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from sagan_tf import cache
from sagan_tf import storage
from sagan_tf.evaluation import features as features_lib
from sagan_tf.evaluation import real as real_lib
from sagan_tf.evaluation import run as run_lib
from sagan_tf.evaluation import sampling
from sagan_tf.evaluation.errors import EvaluationError
from sagan_tf.training import checkpointing
from sagan_tf.training import run_dir

# evaluate.py's defaults: its --seed, --batch_size, --is_splits and --kid_subset_size.
SEED = 0
BATCH_SIZE = 100
IS_SPLITS = 10
KID_SUBSET_SIZE = 1000
# evaluate.py draws 100 KID subsets (26 s at 2,000 samples on two CPU cores);
# 10 give the same mean within its spread at a tenth of the cost. evaluate.py
# --kid_subsets=10 reproduces the logged KID.
KID_SUBSETS = 10
# The values a multi-worker chief shares with the others, after a status.
_SHARED_KEYS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std")
_OFF, _MEASURED, _FAILED = 0.0, 1.0, 2.0
# metrics.jsonl and TensorBoard names of the metrics.
_SUMMARY_NAMES = {"fid": "fid", "kid_mean": "kid", "kid_std": "kid_std", "is_mean": "is",
                  "is_std": "is_std"}


class BestRecord(tf.Module):
  """The lowest FID so far, its step and sample count: saved in every checkpoint of the run.

  Attributes:
    fid: float64 variable, +inf before the first evaluation.
    step: int64 variable, -1 before the first evaluation.
    num_samples: int64 variable, the sample count the FID was measured with.
  """

  def __init__(self):
    super().__init__(name="best_eval")
    with tf.init_scope():
      self.fid = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="fid")
      self.step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="step")
      self.num_samples = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_samples")

  def set(self, fid, step, num_samples):
    self.fid.assign(fid)
    self.step.assign(step)
    self.num_samples.assign(num_samples)

  def reset(self):
    self.set(math.inf, -1, 0)

  def values(self):
    """(fid, step, num_samples) as Python numbers."""
    return float(self.fid.numpy()), int(self.step.numpy()), int(self.num_samples.numpy())


def append_line(path, values):
  """Appends `values` as one JSON line to `path`; on a write failure the file is as it was.

  Raises:
    storage.WriteError: the line cannot be written (disk full, ...).
  """
  line = json.dumps(values, sort_keys=True) + "\n"
  if "://" in path:
    # Object stores cannot append: the file is rewritten through a rename.
    old = tf.io.gfile.GFile(path).read() if tf.io.gfile.exists(path) else ""
    run_dir.write_text(path, old + line)
    return
  size = os.path.getsize(path) if os.path.exists(path) else 0

  def cut_back():
    with open(path, "a") as f:
      f.truncate(size)

  with storage.writing(os.path.basename(path), os.path.dirname(path) or ".", cut_back):
    with open(path, "a") as f:
      f.write(line)
      f.flush()


def _missing_weights_folder():
  return os.environ.get("SAGAN_TF_INCEPTION") or cache.inception_dir()


class PeriodicEvaluator:
  """Scores the generator at `train.eval_every` crossings and keeps the best-FID checkpoint.

  An evaluation generates `train.eval_samples` images from fixed noise and
  balanced labels (evaluate.py's, seed 0), computes FID, KID and, when the
  Inception weights have logits, IS against the cached real statistics,
  writes them to TensorBoard (`eval/fid`, `eval/kid`, `eval/is`,
  `eval/seconds`, ...) and appends them to model_dir/metrics.jsonl. A new
  lowest FID updates the `BestRecord` (which every checkpoint of the run
  holds) and saves the whole training state to checkpoints/best/, a
  CheckpointManager of its own with max_to_keep=1, untouched by the
  rotation of `train.keep_checkpoints`.

  The sampler and the Inception network are built once, at the first
  evaluation, so their functions trace once for the whole run. Without
  Inception weights, one line says that evaluation is off and training goes
  on. Under MultiWorkerMirroredStrategy only the chief evaluates (the
  generator's variables are mirrored, so its copy holds every worker's
  values); the others wait in one all-reduce that hands them its results,
  so every worker takes the same decisions (the best checkpoint, which each
  worker saves where its regular checkpoints go) at the same step.

  Args:
    config: the run's ExperimentConfig.
    generator: the built generator to score (the weight average when kept).
    checkpoint: the run's checkpoint; the `BestRecord` is attached to it as
      `best_eval`, and the best checkpoint is a save of it.
    step: the run's step variable.
    model_dir: the run directory (metrics.jsonl, checkpoints/best/).
    write_dir: where this process writes: model_dir on the chief, a scratch
      folder on the other workers of a multi-worker run.
    strategy: the run's tf.distribute strategy.
    is_chief: whether this process writes model_dir.
    log: callable taking one line.
    feature_network: a callable returning (network, description) in place of
      `evaluation.load_feature_network` (tests use a small stand-in).

  Attributes:
    record: the `BestRecord`.
    last: the metrics of the last evaluation, or None.
    seconds, count: time spent evaluating, and evaluations, in this process.
    sampler, network: the `evaluation.Sampler` and the Inception network,
      once the first evaluation built them.
  """

  def __init__(self, config, generator, checkpoint, step, *, model_dir, write_dir, strategy,
               is_chief, log=print, feature_network=None):
    self.every = config.train.eval_every
    self.num_samples = config.train.eval_samples
    self.record = BestRecord()
    self.last = None
    self.seconds = 0.0
    self.count = 0
    self._config = config
    self._generator = generator
    self._checkpoint = checkpoint
    self._step = step
    self._model_dir = model_dir
    self._write_dir = write_dir
    self._strategy = strategy
    self._is_chief = is_chief
    self._log = log
    self._load_network = feature_network or features_lib.load_feature_network
    self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    self.network = self._network_info = self.sampler = self._inputs = self._real = None
    self._manager = self._share_fn = None
    # Whether this process measures (the chief, with weights), and whether it
    # takes part in evaluations at all (every worker of a multi-worker run).
    self._measures = bool(self.every) and is_chief
    if self._measures and feature_network is None:
      self._measures = self._weights_found()
    self._active = self._measures or (bool(self.every) and self._multi_worker)
    if self.every:
      checkpoint.best_eval = self.record

  def _weights_found(self):
    try:
      features_lib.find_inception_weights(None)
    except EvaluationError:
      self._log(f"evaluation off: no Inception weights in {_missing_weights_folder()}; fetch "
                "them with `python tools/fetch_inception.py`")
      return False
    return True

  def due(self, previous, step, total):
    """Whether to evaluate after the chunk from `previous` to `step`: a crossing, or the end."""
    if not self._active:
      return False
    return step // self.every > previous // self.every or step == total

  def progress_text(self):
    """'  fid 123.4' for the progress line once an evaluation ran, else ''."""
    return f"  fid {self.last['fid']:.1f}" if self.last else ""

  def summary_text(self):
    """'; 3 evaluations took 40 s' for the end-of-training line, or ''."""
    if not self.count:
      return ""
    return f"; {self.count} evaluation{'s' if self.count > 1 else ''} took {self.seconds:.0f} s"

  def restore(self, path):
    """Takes the best record from checkpoint `path` after a resume or rollback.

    The record of checkpoints/best/ wins when lower at the same sample count
    (a rollback to a checkpoint older than the best), so a worse model never
    replaces the best one; a record measured with another sample count is
    dropped, since FID depends on it.
    """
    if not self.every:
      return
    self.record.reset()
    tf.train.Checkpoint(best_eval=self.record).read(path).expect_partial()
    best_path = run_dir.best_checkpoint(self._model_dir)
    if best_path is not None:
      saved = BestRecord()
      try:
        tf.train.Checkpoint(best_eval=saved).read(best_path).expect_partial()
      except (tf.errors.OpError, ValueError) as error:
        self._log(f"the best checkpoint {best_path} cannot be read "
                  f"({run_dir.describe_error(error)}); the next evaluation replaces it")
      else:
        fid, _, count = saved.values()
        record_fid, record_step, record_count = self.record.values()
        if fid < record_fid and (record_step < 0 or count == record_count):
          self.record.set(*saved.values())
    fid, step, count = self.record.values()
    if step < 0:
      return
    if count != self.num_samples:
      self._log(f"the best FID so far ({fid:.2f} at step {step}) was measured with {count} "
                f"samples, now train.eval_samples={self.num_samples}: the best starts afresh")
      self.record.reset()
      return
    self._log(f"best FID so far: {fid:.2f} at step {step} ({best_path or 'not on disk'})")

  def evaluate(self):
    """Evaluates at the current step; returns the metrics dict, or None when none were measured.

    Raises:
      storage.WriteError: metrics.jsonl, the summaries or the best
        checkpoint cannot be written (disk full, ...).
    """
    if not self._active:
      return None
    started = time.perf_counter()
    step = int(self._step.numpy())
    status, results = _OFF, None
    if self._measures:
      results = self._measure(step)
      if self._measures:  # Still on: not turned off by missing weights or real images.
        status = _MEASURED if results else _FAILED
    if self._multi_worker:
      status, results = self._share(status, results)
    if status == _OFF:
      self._active = False
      return None
    seconds = time.perf_counter() - started
    self.seconds += seconds
    self.count += 1
    if status == _FAILED:
      return None
    best_fid, best_step, _ = self.record.values()
    improved = results["fid"] < best_fid
    if improved:
      self.record.set(results["fid"], step, self.num_samples)
      best_fid, best_step = results["fid"], step
      self._save_best(step)
    self.last = results
    self._write(step, results, seconds, best_fid, best_step)
    shown = "  ".join(f"{_SUMMARY_NAMES[key]} {results[key]:.4g}" for key in _SHARED_KEYS
                      if key in results and not key.endswith("_std"))
    best = "new best" if improved else f"best fid {best_fid:.2f} at step {best_step}"
    self._log(f"evaluation at step {step}: {shown} ({self.num_samples} samples, "
              f"{seconds:.1f} s; {best})")
    return results

  def _prepare(self):
    """Loads the Inception network and builds the sampler; False (and one line) if it cannot."""
    try:
      self.network, self._network_info = self._load_network()
    except EvaluationError as error:
      self._log(f"evaluation off: {error}")
      self._measures = False
      return False
    self.sampler = sampling.Sampler(self._generator)
    self._inputs = sampling.metric_inputs(SEED, self.num_samples, self.sampler.z_dim,
                                          self.sampler.num_classes)
    if not self.network.has_logits:
      self._log(f"evaluation: no Inception Score, the {self.network.source} weights have no "
                "logits (the TF frozen graph classify_image_graph_def.pb has them)")
    return True

  def _real_statistics(self):
    data = self._config.data
    return real_lib.real_statistics(
        data.dataset, image_size=self._config.model.image_size, num_samples=self.num_samples,
        batch_size=BATCH_SIZE, inception=self.network, inception_info=self._network_info,
        data_dir=data.data_dir, split=data.split, need_features=True, log=self._log)

  def _measure(self, step):
    """The metrics at `step`; {} (and a line) when they cannot be computed, None when off."""
    if self.network is None and not self._prepare():
      return None
    z, labels = self._inputs
    fake = features_lib.generated_outputs(
        self.sampler, z, labels, batch_size=BATCH_SIZE, inception=self.network,
        need_logits=self.network.has_logits, progress=False)
    if not np.isfinite(fake["pool_3"]).all():
      self._log(f"evaluation at step {step}: the generated images give non-finite Inception "
                "features; no metrics")
      return {}
    if self._real is None:
      try:
        self._real = self._real_statistics()
      except EvaluationError as error:
        self._log(f"evaluation off: {error}")
        self._measures = False
        return None
    metrics = ("fid", "kid") + (("is",) if self.network.has_logits else ())
    try:
      return run_lib.compute_metrics(
          metrics, fake=fake, real=self._real, labels=labels, is_splits=IS_SPLITS,
          kid_subsets=KID_SUBSETS, kid_subset_size=KID_SUBSET_SIZE, seed=SEED)
    except ValueError as error:
      self._log(f"evaluation at step {step} failed: {error}")
      return {}

  def _share(self, status, results):
    """(status, results) of the chief on every worker: one all-reduce to which the others add 0."""
    if self._share_fn is None:
      strategy = self._strategy
      local_replicas = len(strategy.extended.worker_devices)

      def share(values):
        per_replica = strategy.run(lambda v: v / local_replicas, args=(values,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

      self._share_fn = tf.function(share, autograph=False)
    values = np.zeros(1 + len(_SHARED_KEYS), np.float32)
    if self._is_chief:
      values[0] = status
      values[1:] = [(results or {}).get(key, math.nan) for key in _SHARED_KEYS]
    shared = self._share_fn(tf.constant(values)).numpy()
    status = float(np.round(shared[0]))
    results = {key: float(value) for key, value in zip(_SHARED_KEYS, shared[1:])
               if not math.isnan(value)}
    return status, results

  def _save_best(self, step):
    directory = os.path.join(self._write_dir, run_dir.BEST_CHECKPOINT_DIR)
    if self._manager is None:
      self._manager = self._open_manager(directory)
    with storage.writing(f"best checkpoint ckpt-{step}", directory,
                         lambda: checkpointing.remove_failed_save(directory, step,
                                                                  self._manager),
                         "removed its partial files; the other checkpoints are intact; free some "
                         "space and run the same command to resume"):
      path = self._manager.save(checkpoint_number=step)
    self._log(f"saved best checkpoint {path}")

  def _open_manager(self, directory):
    def open_manager():
      return tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=1)
    try:
      return open_manager()
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as error:
      # The state file of the best checkpoint is unreadable; the save about to
      # happen replaces that checkpoint anyway.
      self._log(f"the state file of {directory} cannot be read ({run_dir.describe_error(error)}); "
                "writing a new one")
      tf.io.gfile.remove(os.path.join(directory, "checkpoint"))
      return open_manager()

  def _write(self, step, results, seconds, best_fid, best_step):
    """TensorBoard scalars (every worker, into its summaries) and a metrics.jsonl line (chief)."""
    summaries = os.path.join(self._write_dir, run_dir.SUMMARY_DIR)
    with storage.writing("evaluation summaries", summaries):
      for key, value in results.items():
        tf.summary.scalar(f"eval/{_SUMMARY_NAMES[key]}", value, step=step)
      tf.summary.scalar("eval/best_fid", best_fid, step=step)
      tf.summary.scalar("eval/seconds", seconds, step=step)
      tf.summary.flush()
    if not self._is_chief:
      return
    line = {"step": step, "wall_time": round(time.time(), 3), **results,
            "num_samples": self.num_samples, "seconds": round(seconds, 2),
            "best_fid": best_fid, "best_step": best_step,
            "ema": self._config.train.ema_decay > 0}
    append_line(os.path.join(self._model_dir, run_dir.METRICS_LOG), line)
