"""Tests of PeriodicEvaluator on a tiny generator and the stand-in network: metrics, best, resume."""

import dataclasses
import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf import metrics
from sagan_tf import samples
from sagan_tf.evaluation import real as real_lib
from sagan_tf.models.build import build_from_config
from sagan_tf.training import periodic_eval
from sagan_tf.training import run_dir
from sagan_tf.training.checkpoints import RunCheckpoint
from tests import standin_inception

NUM_SAMPLES = 20
STANDIN_DIM = 16


def eval_config(eval_every=2, eval_samples=NUM_SAMPLES):
  config = configs.PRESETS["animal_mnist"]()
  return dataclasses.replace(
      config,
      model=dataclasses.replace(config.model, num_classes=10, g_width=8, d_width=8, z_dim=16),
      train=dataclasses.replace(config.train, eval_every=eval_every, eval_samples=eval_samples))


class Run:
  """A generator, its step and checkpoint, and a PeriodicEvaluator over them in `model_dir`."""

  def __init__(self, model_dir, config, feature_network=True):
    self.config = config
    self.model_dir = model_dir
    self.generator, _ = build_from_config(config.model)
    self.step = tf.Variable(0, dtype=tf.int64)
    self.checkpoint = RunCheckpoint(generator=self.generator, step=self.step)
    self.logs = []
    network = (functools.partial(standin_inception.load_standin, STANDIN_DIM)
               if feature_network else None)
    self.evaluator = periodic_eval.PeriodicEvaluator(
        config, self.generator, self.checkpoint, self.step, model_dir=model_dir,
        write_dir=model_dir, strategy=tf.distribute.get_strategy(), is_chief=True,
        log=self.logs.append, feature_network=network)

  def evaluate_at(self, step):
    self.step.assign(step)
    return self.evaluator.evaluate()

  def metrics_lines(self):
    with open(os.path.join(self.model_dir, run_dir.METRICS_LOG)) as f:
      return [json.loads(line) for line in f]


def numpy_fid(generator, num_samples):
  """FID from first principles: evaluate.py's noise and labels, the stand-in, numpy statistics."""
  rng = np.random.default_rng(0)
  z = rng.standard_normal((num_samples, generator.z_dim)).astype(np.float32)
  labels = rng.permutation(np.arange(num_samples) % generator.num_classes).astype(np.int32)
  images = generator(z, labels, training=False).numpy()
  network = standin_inception.standin_network(dim=STANDIN_DIM)
  fake = network(samples.to_uint8(images).astype(np.float32))["pool_3"].astype(np.float64)
  real_images, _ = real_lib.read_real("animal_mnist", image_size=32, num=num_samples,
                                      batch_size=100, data_dir=None, split="train",
                                      conditional=False)
  real = network(real_images.astype(np.float32))["pool_3"].astype(np.float64)
  return metrics.frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0),
                                  np.cov(real, rowvar=False))


def test_without_weights_one_line_says_evaluation_is_off(tmp_path, cache_dir):
  run = Run(str(tmp_path), eval_config(), feature_network=False)
  folder = os.path.join(cache_dir, "inception")
  assert run.logs == [f"evaluation off: no Inception weights in {folder}; fetch them with "
                      "`python tools/fetch_inception.py`"]
  assert not run.evaluator.due(0, 2, 4)
  assert run.evaluator.evaluate() is None
  assert not os.path.exists(os.path.join(str(tmp_path), run_dir.METRICS_LOG))


def test_due_at_every_crossing_and_at_the_last_step(tmp_path, cache_dir):
  evaluator = Run(str(tmp_path), eval_config(eval_every=10)).evaluator
  assert [evaluator.due(a, b, 45) for a, b in ((0, 5), (5, 10), (10, 15), (15, 25), (40, 45))] == [
      False, True, False, True, True]
  off = Run(str(tmp_path), eval_config(eval_every=0)).evaluator
  assert not off.due(0, 10, 10) and off.evaluate() is None


def test_fid_equals_numpy_fid_and_evaluations_trace_once(tmp_path, cache_dir):
  run = Run(str(tmp_path), eval_config())
  first = run.evaluate_at(2)
  assert first["fid"] == pytest.approx(numpy_fid(run.generator, NUM_SAMPLES), rel=1e-6)
  assert set(first) == {"fid", "kid_mean", "kid_std", "is_mean", "is_std"}
  # Spectral norm makes a rescaled kernel act as before: add noise instead.
  noise = np.random.default_rng(3)
  for step in (4, 6):
    for variable in run.generator.trainable_variables:
      variable.assign_add(noise.normal(0.0, 0.3, variable.shape).astype(np.float32))
    run.evaluate_at(step)
  # One trace each for three evaluations: built once, input signatures fixed.
  assert run.evaluator.sampler._run.experimental_get_tracing_count() == 1  # pylint: disable=protected-access
  assert run.evaluator.network.forward.experimental_get_tracing_count() == 1
  lines = run.metrics_lines()
  assert [line["step"] for line in lines] == [2, 4, 6]
  fids = [line["fid"] for line in lines]
  assert fids[0] == first["fid"] and len(set(fids)) == 3
  best = int(np.argmin(fids))
  assert lines[-1]["best_fid"] == min(fids) and lines[-1]["best_step"] == 2 * best + 2
  assert all(line["num_samples"] == NUM_SAMPLES and line["wall_time"] > 1e9 for line in lines)
  assert run.evaluator.record.values() == (min(fids), 2 * best + 2, NUM_SAMPLES)
  assert run.evaluator.progress_text() == f"  fid {fids[-1]:.1f}"
  assert run.logs[-1].startswith(f"evaluation at step 6: fid {fids[-1]:.4g}  kid ")
  # checkpoints/best/ holds one checkpoint, of the best step, with its weights.
  best_path = run_dir.best_checkpoint(str(tmp_path))
  assert os.path.basename(best_path) == f"ckpt-{2 * best + 2}"
  names = os.listdir(os.path.join(str(tmp_path), run_dir.BEST_CHECKPOINT_DIR))
  assert sorted(n for n in names if n.endswith(".index")) == [f"ckpt-{2 * best + 2}.index"]
  restored = Run(str(tmp_path / "other"), eval_config())
  restored.checkpoint.read(best_path).expect_partial()
  assert numpy_fid(restored.generator, NUM_SAMPLES) == pytest.approx(min(fids), rel=1e-6)


def test_real_statistics_are_cached_once(tmp_path, cache_dir):
  Run(str(tmp_path / "a"), eval_config()).evaluate_at(2)
  stats = os.listdir(os.path.join(cache_dir, "stats"))
  assert len([name for name in stats if name.endswith(".npz")]) == 1
  run = Run(str(tmp_path / "b"), eval_config())
  run.evaluate_at(2)
  assert any(line.startswith("real statistics: cached ") for line in run.logs)


def test_resume_keeps_the_best_and_a_better_best_on_disk_wins(tmp_path, cache_dir):
  model_dir = str(tmp_path)
  run = Run(model_dir, eval_config())
  first = run.evaluate_at(2)["fid"]
  manager = tf.train.CheckpointManager(run.checkpoint, os.path.join(model_dir, "checkpoints"),
                                       max_to_keep=5)
  path = manager.save(checkpoint_number=2)
  resumed = Run(model_dir, eval_config())
  resumed.evaluator.restore(path)
  assert resumed.evaluator.record.values() == (first, 2, NUM_SAMPLES)
  assert resumed.logs[-1].startswith(f"best FID so far: {first:.2f} at step 2 ")
  # A rollback to a checkpoint older than the best: the best on disk wins.
  older = Run(model_dir, eval_config())
  older.evaluator.record.set(first + 100.0, 0, NUM_SAMPLES)
  old_path = tf.train.CheckpointManager(older.checkpoint, str(tmp_path / "old"),
                                        max_to_keep=1).save(checkpoint_number=0)
  older.evaluator.restore(old_path)
  assert older.evaluator.record.values() == (first, 2, NUM_SAMPLES)
  # Another sample count: FIDs are not comparable, the best starts afresh.
  changed = Run(model_dir, eval_config(eval_samples=NUM_SAMPLES + 10))
  changed.evaluator.restore(path)
  assert changed.evaluator.record.values() == (np.inf, -1, 0)
  assert "measured with 20 samples, now train.eval_samples=30" in changed.logs[-1]


@pytest.mark.parametrize("root", ["local", "ram://periodic_eval_test"])
def test_metrics_lines_are_appended_in_order(tmp_path, root):
  # A local file is appended to; a file behind a scheme (object stores cannot
  # append) is rewritten whole through a rename. Both end with every line.
  directory = str(tmp_path) if root == "local" else root
  path = os.path.join(directory, "metrics.jsonl") if root == "local" else f"{root}/metrics.jsonl"
  tf.io.gfile.makedirs(directory)
  for step in (10, 20, 30):
    periodic_eval.append_line(path, {"step": step, "fid": step / 2})
  with tf.io.gfile.GFile(path) as f:
    lines = [json.loads(line) for line in f.read().splitlines()]
  assert lines == [{"fid": 5.0, "step": 10}, {"fid": 10.0, "step": 20}, {"fid": 15.0, "step": 30}]
  assert not tf.io.gfile.exists(path + ".tmp")
