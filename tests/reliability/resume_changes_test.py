"""Resuming under changed settings or a changed data set: adopted with a line, or refused."""

import dataclasses
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.training import run_dir
from sagan_tf.training import trainer as trainer_lib
from tests import launch
from tests.reliability import REPO, TINY, TRAIN, constant_batches, env, tiny_config


def _trainer(model_dir, logs, config):
  return trainer_lib.Trainer(config, model_dir, constant_batches, log=logs.append)


def test_settings_split_into_adopted_and_refused():
  saved = tiny_config(ema_decay=0.0)
  config = dataclasses.replace(
      saved, train=dataclasses.replace(saved.train, ema_decay=0.999, train_steps=20,
                                       sample_every=7, summary_every=3, checkpoint_every=5,
                                       eval_every=4, eval_samples=200),
      optimizer=dataclasses.replace(saved.optimizer, g_learning_rate=5e-5),
      runtime=dataclasses.replace(saved.runtime, mixed_precision="bfloat16"))
  refused, adopted = run_dir.resume_changes(saved, config)
  assert refused == []
  assert "train.ema_decay: saved 0.0, now 0.999" in adopted
  assert f"optimizer.g_learning_rate: saved {saved.optimizer.g_learning_rate}, now 5e-05" in adopted
  # Evaluation is host-side: a resumed run takes it over (a best FID measured
  # with another eval_samples is dropped, see PeriodicEvaluator.restore).
  assert "train.eval_every: saved 0, now 4" in adopted
  assert f"train.eval_samples: saved {saved.train.eval_samples}, now 200" in adopted
  assert len(adopted) == 9
  shapes = dataclasses.replace(config, model=dataclasses.replace(config.model, g_width=16),
                               runtime=dataclasses.replace(config.runtime,
                                                           mixed_precision="float16"),
                               data=dataclasses.replace(config.data, dataset="cifar10"))
  refused, _ = run_dir.resume_changes(saved, shapes)
  assert refused == ["model.g_width: saved 8, now 16", "data.dataset: saved 'animal_mnist', "
                     "now 'cifar10'", "runtime.mixed_precision: saved 'float32', now 'float16'"]


def test_biggan_model_options_are_refused_on_resume():
  saved = tiny_config()
  options = {"init": "orthogonal", "class_gain": "one_plus_embedding", "d_sn_update": "both"}
  for name, value in options.items():
    config = dataclasses.replace(saved, model=dataclasses.replace(saved.model, **{name: value}))
    refused, adopted = run_dir.resume_changes(saved, config)
    default = getattr(saved.model, name)
    assert (refused, adopted) == ([f"model.{name}: saved {default!r}, now {value!r}"], [])


def test_check_resumable_compares_class_names_not_only_their_count(tmp_path):
  model_dir = str(tmp_path)
  config = tiny_config()
  run_dir.write_json(os.path.join(model_dir, run_dir.CONFIG_FILE), config.to_dict())
  saved = {"name": "folder:/x", "num_classes": 3, "class_names": ["ant", "bee", "cow"]}
  run_dir.write_json(os.path.join(model_dir, run_dir.DATASET_FILE), saved)
  assert run_dir.check_resumable(config, model_dir, dict(saved)) == []
  for names in (["ant", "bee", "wasp"], ["bee", "ant", "cow"]):
    with pytest.raises(run_dir.RunDirError, match=(
        rf"trained on other classes \(class names: saved \['ant', 'bee', 'cow'\], now "
        rf"\[{', '.join(repr(n) for n in names)}\]\)")):
      run_dir.check_resumable(config, model_dir, dict(saved, class_names=names))
  many = [f"c{i}" for i in range(100)]
  run_dir.write_json(os.path.join(model_dir, run_dir.DATASET_FILE),
                     dict(saved, num_classes=100, class_names=many))
  with pytest.raises(run_dir.RunDirError, match=r"saved 100 classes, now 100; label 7: saved 'c7', "
                     r"now 'seven'$|label 7: saved 'c7', now 'seven'\)"):
    run_dir.check_resumable(config, model_dir, dict(saved, num_classes=100,
                                                     class_names=many[:7] + ["seven"] + many[8:]))


def test_run_without_ema_resumes_with_ema_and_new_learning_rates(tmp_path):
  model_dir = str(tmp_path / "run")
  old = tiny_config(ema_decay=0.0)
  first = _trainer(model_dir, [], old)
  first.step.assign(2)
  first.generator.trainable_variables[0].assign_add(
      tf.ones_like(first.generator.trainable_variables[0]))
  first._save()  # pylint: disable=protected-access
  saved_weights = [v.numpy() for v in first.generator.variables]
  new = dataclasses.replace(
      tiny_config(ema_decay=0.9),
      optimizer=dataclasses.replace(old.optimizer, g_learning_rate=3e-5, d_learning_rate=7e-5))
  logs = []
  second = _trainer(model_dir, logs, new)
  assert second.restore() == 2
  assert any("starts now as a copy of the generator, with decay 0.9" in line for line in logs), logs
  assert not any("cannot be read" in line for line in logs), logs
  for restored, saved, average in zip(second.generator.variables, saved_weights,
                                      second.ema_generator.variables):
    np.testing.assert_array_equal(restored.numpy(), saved)
    np.testing.assert_array_equal(average.numpy(), saved)
  assert float(second.g_optimizer.learning_rate.numpy()) == pytest.approx(3e-5)
  assert float(second.d_optimizer.learning_rate.numpy()) == pytest.approx(7e-5)
  # And back: a run with EMA resumes without it.
  second._save()  # pylint: disable=protected-access
  third = _trainer(model_dir, logs, old)
  assert third.restore() == 2


def test_resumed_run_with_ema_keeps_its_average(tmp_path):
  model_dir = str(tmp_path / "run")
  first = _trainer(model_dir, [], tiny_config(ema_decay=0.5))
  first.step.assign(2)
  first.ema_generator.trainable_variables[0].assign_add(
      tf.ones_like(first.ema_generator.trainable_variables[0]))
  first._save()  # pylint: disable=protected-access
  second = _trainer(model_dir, [], tiny_config(ema_decay=0.99))
  second.restore()
  np.testing.assert_array_equal(second.ema_generator.trainable_variables[0].numpy(),
                                first.ema_generator.trainable_variables[0].numpy())


def test_out_of_memory_message_names_what_ran_out_and_the_flag():
  error = tf.errors.ResourceExhaustedError(
      None, None, "Graph execution error:\n\nOOM when allocating tensor with shape[100000,128,4,4] "
      "and type float on /job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu\n\t "
      "[[{{node generator/dense/MatMul}}]]")
  config = configs.PRESETS["animal_mnist"]()
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=100000))
  message = trainer_lib.out_of_memory_message(error, config, step=0)
  assert message.startswith("out of memory on CPU:0 after step 0 (a tensor of shape "
                            "[100000,128,4,4]): the batch of train.batch_size=100000 images")
  assert "lower --batch_size" in message and "\n" not in message
  assert "while building" in trainer_lib.out_of_memory_message(
      tf.errors.ResourceExhaustedError(None, None, "OOM"), config)


@pytest.mark.slow
def test_train_py_resumes_a_run_without_ema_with_ema(tmp_path):
  # The case: this used to say "no checkpoint can be read; move the directory away".
  model_dir = str(tmp_path / "run")
  args = [f"--model_dir={model_dir}", *TINY]
  first = launch.run([sys.executable, TRAIN, *args, "--train_steps=2", "--ema_decay=0"],
                     cwd=REPO, env=env(), timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  second = launch.run([sys.executable, TRAIN, *args, "--train_steps=4", "--ema_decay=0.999",
                       "--override=optimizer.d_learning_rate=1e-4"], cwd=REPO, env=env(),
                      timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  out = second.stdout
  assert "resuming with a changed setting, adopted: train.ema_decay: saved 0.0, now 0.999" in out
  saved_rate = configs.PRESETS["animal_mnist"]().optimizer.d_learning_rate
  assert ("resuming with a changed setting, adopted: optimizer.d_learning_rate: saved "
          f"{saved_rate}, now 0.0001") in out
  assert f"resumed from {model_dir}/checkpoints/ckpt-2 at step 2" in out
  assert "starts now as a copy of the generator, with decay 0.999" in out
  assert "cannot be read" not in out
  assert run_dir.read_config(model_dir).train.ema_decay == 0.999
  assert run_dir.latest_checkpoint(model_dir).endswith("ckpt-4")
