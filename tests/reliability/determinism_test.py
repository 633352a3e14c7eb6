"""--deterministic: a run interrupted and resumed equals the uninterrupted run, step for step.

The data position is in the checkpoint (the shuffled Animal-MNIST order
included), as are the weights, Adam slots, EMA, step and noise RNG.
"""

import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import run_dir
from tests.reliability import Run

FLAGS = ["--deterministic", "--batch_size=8", "--override=model.g_width=8",
         "--override=model.d_width=8", "--override=train.ema_decay=0.9",
         "--override=train.checkpoint_every=1", "--override=train.summary_every=1",
         "--override=train.sample_every=1000", "--noexport"]


def train(model_dir, *args, **extra_env):
  run = Run([f"--model_dir={model_dir}", *FLAGS, *args], **extra_env)
  status = run.finish(timeout=600)
  assert status == 0, run.stdout() + run.stderr()[-3000:]
  return run.stdout()


def checkpoint_values(path):
  """{name: array} of a checkpoint, without its save counter and data-iterator state."""
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if not name.startswith(("save_counter", "data_iterator", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def losses(model_dir):
  """{(tag, step): value} of the loss summaries of all event files of a run."""
  values = {}
  directory = os.path.join(model_dir, run_dir.SUMMARY_DIR)
  for name in sorted(os.listdir(directory)):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
      for value in event.summary.value:
        if value.tag.startswith("losses/"):
          values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return values


def assert_same_run(straight_dir, resumed_dir, total, resumed_from, compare_losses=True):
  """Bit-identical checkpoints at `total`; with `compare_losses`, the same losses after the break.

  The logged losses are chunk averages: they match step for step only
  where both runs cut the chunks alike.
  """
  straight = checkpoint_values(os.path.join(straight_dir, run_dir.CHECKPOINT_DIR, f"ckpt-{total}"))
  resumed = checkpoint_values(os.path.join(resumed_dir, run_dir.CHECKPOINT_DIR, f"ckpt-{total}"))
  assert sorted(straight) == sorted(resumed)
  assert any(name.startswith("rng/") for name in straight)
  for name, value in straight.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  if not compare_losses:
    return
  straight_losses, resumed_losses = losses(straight_dir), losses(resumed_dir)
  after = {key: value for key, value in straight_losses.items() if key[1] > resumed_from}
  assert after, straight_losses
  for key, value in after.items():
    assert resumed_losses[key] == value, key


@pytest.mark.slow
def test_stopped_by_train_steps_and_resumed_equals_straight(tmp_path):
  # One step per chunk: every step's losses are logged and compared. DiffAugment
  # on: its draws, seeded from the step counter, must follow the resume too.
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  args = ["--steps_per_loop=1", "--override=train.diffaugment=color,translation,cutout"]
  train(straight, "--train_steps=4", *args)
  train(resumed, "--train_steps=2", *args)
  log = train(resumed, "--train_steps=4", *args)
  assert "resumed from" in log and "restored the data position" in log, log
  assert_same_run(straight, resumed, 4, 2)


@pytest.mark.slow
def test_stopped_by_sigterm_mid_chunk_on_two_replicas_equals_straight(tmp_path):
  # Two logical CPUs make MirroredStrategy run two replicas. The stop comes
  # early in the second 12-step chunk (the first one traces the loop), so
  # the resumed run's chunks are cut differently from the straight run's.
  cpus = {"SAGAN_TF_LOGICAL_CPUS": 2}
  args = ["--train_steps=48", "--steps_per_loop=12", "--override=train.checkpoint_every=1000"]
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  log = train(straight, "--strategy=mirrored", *args, **cpus)
  assert "MirroredStrategy with 2 replicas of 4 images" in log, log
  run = Run([f"--model_dir={resumed}", "--strategy=mirrored", *FLAGS, *args], **cpus)
  run.wait_for(r"^step 12/48")
  time.sleep(0.5)
  run.process.send_signal(signal.SIGTERM)
  assert run.finish(timeout=300) == 0, run.stdout() + run.stderr()[-3000:]
  step = int(run.wait_for(r"^stopped by SIGTERM at step (\d+)", timeout=1).group(1))
  assert 12 < step < 48, run.stdout()
  log = train(resumed, "--strategy=mirrored", *args, **cpus)
  assert f"at step {step}" in log and "restored the data position" in log, log
  assert_same_run(straight, resumed, 48, step, compare_losses=False)
  print(f"SIGTERM stopped the two-replica run at step {step} of 48")
