"""Evaluation during training, as the Trainer and train.py run it: metrics, best checkpoint, export."""

import dataclasses
import functools
import json
import os
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import evaluation
from sagan_tf import export
from sagan_tf.training import run_dir
from sagan_tf.training import train_lib
from sagan_tf.training import trainer as trainer_lib
from tests import launch
from tests import standin_inception
from tests.tiny_experiment import constant_batches, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_SAMPLES = 20
STANDIN_DIM = 16
STANDIN = functools.partial(standin_inception.load_standin, STANDIN_DIM)
INFO = types.SimpleNamespace(class_names=("a", "b", "c"))


def eval_config(**train_values):
  return tiny_config(**{"eval_every": 2, "eval_samples": NUM_SAMPLES, **train_values})


def shifted_standin():
  """The stand-in with every generated feature moved far off: each later FID is worse.

  Its description is the stand-in's, so the cached real statistics of the
  unshifted network serve as the real side.
  """
  network, info = STANDIN()
  forward = network.forward
  network.forward = lambda images: {k: v + 50.0 for k, v in forward(images).items()}
  return network, info


def train(model_dir, config, feature_network=STANDIN):
  logs = []
  trainer = trainer_lib.Trainer(config, model_dir, constant_batches, log=logs.append,
                                feature_network=feature_network)
  trainer.train()
  return trainer, logs


def metrics_lines(model_dir):
  with open(os.path.join(model_dir, run_dir.METRICS_LOG)) as f:
    return [json.loads(line) for line in f]


def evaluate_py_fid(model_dir, step):
  """FID and KID as evaluate.py computes them for checkpoint `step`, real statistics recomputed."""
  options = evaluation.EvaluationOptions(
      checkpoint=model_dir, checkpoint_step=step, num_samples=NUM_SAMPLES, metrics=("fid", "kid"),
      kid_subsets=10, sheets=False, use_cache=False, output_dir=os.path.join(model_dir, "eval"))
  return evaluation.run_evaluation(options, log=lambda line: None, feature_network=STANDIN)


def best_variable(path, name):
  return tf.train.load_variable(path, f"best_eval/{name}/.ATTRIBUTES/VARIABLE_VALUE")


def test_best_survives_rotation_and_resume_and_is_exported(tmp_path, cache_dir):
  model_dir = str(tmp_path / "run")
  first, logs = train(model_dir, eval_config(train_steps=4, keep_checkpoints=1))
  lines = metrics_lines(model_dir)
  assert [line["step"] for line in lines] == [2, 4]
  assert all(line["ema"] and np.isfinite(line["fid"]) for line in lines)
  # evaluate.py on the same weights and count: the same FID and KID.
  report = evaluate_py_fid(model_dir, 4)
  assert report["metrics"]["fid"] == pytest.approx(lines[-1]["fid"], rel=1e-6)
  assert report["metrics"]["kid_mean"] == pytest.approx(lines[-1]["kid_mean"], rel=1e-5, abs=1e-9)
  # Built once: one trace each for both evaluations.
  assert first.evaluator.sampler._run.experimental_get_tracing_count() == 1  # pylint: disable=protected-access
  assert first.evaluator.network.forward.experimental_get_tracing_count() == 1
  assert any(line.startswith("step 4/4 ") and line.endswith(f"  fid {lines[0]['fid']:.1f}")
             for line in logs), logs
  assert logs[-1].startswith("trained steps 0-4 in ") and logs[-1].endswith(
      " s") and "; 2 evaluations took " in logs[-1]
  best_fid = min(line["fid"] for line in lines)
  best_step = [line["step"] for line in lines if line["fid"] == best_fid][0]

  # Resumed with a network that makes every later FID worse: the best stays.
  second, logs = train(model_dir, eval_config(train_steps=8, keep_checkpoints=1),
                       feature_network=shifted_standin)
  assert f"best FID so far: {best_fid:.2f} at step {best_step} " in " ".join(logs), logs
  lines = metrics_lines(model_dir)
  assert [line["step"] for line in lines] == [2, 4, 6, 8]
  assert all(line["fid"] > best_fid for line in lines[2:])
  assert all((line["best_fid"], line["best_step"]) == (best_fid, best_step) for line in lines[2:])
  # Rotation (keep_checkpoints=1) left one regular checkpoint; the best is apart.
  assert os.path.basename(run_dir.latest_checkpoint(model_dir)) == "ckpt-8"
  assert sorted(n for n in os.listdir(os.path.join(model_dir, run_dir.CHECKPOINT_DIR))
                if n.endswith(".index")) == ["ckpt-8.index"]
  best = run_dir.best_checkpoint(model_dir)
  assert os.path.basename(best) == f"ckpt-{best_step}"
  last = run_dir.latest_checkpoint(model_dir)
  assert (best_variable(last, "fid"), best_variable(last, "step")) == (best_fid, best_step)
  # evaluate.py --checkpoint_step=best scores that checkpoint: the FID training recorded.
  report = evaluate_py_fid(model_dir, "best")
  assert report["config"]["step"] == best_step
  assert report["metrics"]["fid"] == pytest.approx(best_fid, rel=1e-6)

  config = second.config
  for which, step in (("last", 8), ("auto", best_step), ("best", best_step)):
    path = train_lib.export_run(second, model_dir, INFO, config, which)
    assert export.read_metadata(path)["step"] == step, which
  # The last export, --export=best, is the best checkpoint's weight average.
  exported, _ = export.load_exported(path)
  generator, _, _ = run_dir.load_generator(model_dir, use_ema=True, checkpoint_path=best)
  z = np.random.default_rng(0).standard_normal((2, generator.z_dim)).astype(np.float32)
  labels = np.array([0, 2])
  np.testing.assert_allclose(exported(z, labels), generator(z, labels, training=False), atol=1e-5)


def test_without_weights_one_line_and_training_goes_on(tmp_path, cache_dir):
  model_dir = str(tmp_path / "run")
  trainer, logs = train(model_dir, eval_config(train_steps=2), feature_network=None)
  off = [line for line in logs if line.startswith("evaluation")]
  assert off == [f"evaluation off: no Inception weights in {os.path.join(cache_dir, 'inception')}"
                 "; fetch them with `python tools/fetch_inception.py`"]
  assert int(trainer.step.numpy()) == 2 and run_dir.latest_checkpoint(model_dir)
  assert not os.path.exists(os.path.join(model_dir, run_dir.METRICS_LOG))
  assert run_dir.best_checkpoint(model_dir) is None
  # --export=auto then exports the last step.
  path = train_lib.export_run(trainer, model_dir, INFO, trainer.config, "auto")
  assert export.read_metadata(path)["step"] == 2


def test_mirrored_run_evaluates_once_as_evaluate_py_does(tmp_path, cache_dir):
  model_dir = str(tmp_path / "run")
  config = eval_config(train_steps=4, eval_every=4)
  config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                   strategy="mirrored"))
  trainer, logs = train(model_dir, config)
  assert trainer.strategy.num_replicas_in_sync == 2
  assert [line["step"] for line in metrics_lines(model_dir)] == [4]
  assert len([line for line in logs if line.startswith("evaluation at step 4: ")]) == 1
  report = evaluate_py_fid(model_dir, 4)
  assert report["metrics"]["fid"] == pytest.approx(metrics_lines(model_dir)[0]["fid"], rel=1e-6)


def test_export_best_without_evaluation_is_a_usage_error(tmp_path):
  result = launch.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--model_dir={tmp_path / 'run'}",
       "--override=train.eval_every=0", "--export=best"], timeout=120, cwd=REPO,
      env=launch.child_env())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "train.py: error: --export=best needs evaluation during training: set train.eval_every, "
      "e.g. --override=train.eval_every=1000")


@pytest.mark.slow
def test_train_py_with_the_inception_weights_exports_the_best(tmp_path):
  """The one test on the real network: 10 samples, evaluations at steps 2 and 4, --export=best."""
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  try:
    weights = metrics.find_inception_weights(None)
  except FileNotFoundError:
    pytest.skip("no Inception weights; python tools/fetch_inception.py fetches them")
  model_dir = str(tmp_path / "run")
  result = launch.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--model_dir={model_dir}",
       "--train_steps=4", "--steps_per_loop=2", "--batch_size=8", "--override=model.g_width=8",
       "--override=model.d_width=8", "--override=train.checkpoint_every=2",
       "--override=train.sample_every=1000", "--override=train.summary_every=1000",
       "--override=train.eval_every=2", "--override=train.eval_samples=10", "--export=best"],
      timeout=600, cwd=REPO,
      env=launch.child_env(SAGAN_TF_INCEPTION=weights, SAGAN_TF_CACHE=tmp_path / "cache"))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = metrics_lines(model_dir)
  assert [line["step"] for line in lines] == [2, 4]
  best_step = lines[-1]["best_step"]
  assert lines[-1]["best_fid"] == min(line["fid"] for line in lines)
  for step in (2, 4):
    assert f"evaluation at step {step}: fid " in result.stdout
  assert "no Inception Score, the torchscript weights have no logits" in result.stdout
  assert export.read_metadata(os.path.join(model_dir, run_dir.SAVED_MODEL_DIR))["step"] == best_step
  assert f"exported the generator of step {best_step} to " in result.stdout
