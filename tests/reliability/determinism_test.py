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


def assert_same_checkpoint(straight_dir, resumed_dir, step):
  """The two runs' checkpoints at `step` hold bit-identical values."""
  straight = checkpoint_values(os.path.join(straight_dir, run_dir.CHECKPOINT_DIR, f"ckpt-{step}"))
  resumed = checkpoint_values(os.path.join(resumed_dir, run_dir.CHECKPOINT_DIR, f"ckpt-{step}"))
  assert sorted(straight) == sorted(resumed)
  assert any(name.startswith("rng/") for name in straight)
  for name, value in straight.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=f"step {step}: {name}")


@pytest.mark.slow
def test_stopped_by_sigterm_mid_chunk_on_two_replicas_equals_straight(tmp_path):
  """A run stopped by SIGTERM mid-chunk and resumed equals a straight run, at the stop and the end.

  Two logical CPUs make MirroredStrategy run two replicas, and DiffAugment
  is on: its draws, seeded from the step counter, must follow the resume
  too. The straight run takes one step per chunk and checkpoints each; the
  interrupted run takes 6 per chunk and stops inside its second chunk, so
  the two cut their chunks differently, and the resumed run starts from a
  data position that is not a chunk boundary.
  """
  cpus = {"SAGAN_TF_LOGICAL_CPUS": 2}
  args = ["--strategy=mirrored", "--train_steps=18", "--override=train.keep_checkpoints=20",
          "--override=train.diffaugment=color,translation,cutout"]
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  log = train(straight, "--steps_per_loop=1", *args, **cpus)
  assert "MirroredStrategy with 2 replicas of 4 images" in log, log
  chunked = [*args, "--steps_per_loop=6", "--override=train.checkpoint_every=1000"]
  run = Run([f"--model_dir={resumed}", *FLAGS, *chunked], **cpus)
  run.wait_for(r"^step 6/18")
  time.sleep(0.2)
  run.process.send_signal(signal.SIGTERM)
  assert run.finish(timeout=300) == 0, run.stdout() + run.stderr()[-3000:]
  step = int(run.wait_for(r"^stopped by SIGTERM at step (\d+)", timeout=1).group(1))
  assert 6 < step < 18, run.stdout()
  assert_same_checkpoint(straight, resumed, step)
  log = train(resumed, *chunked, **cpus)
  assert f"at step {step}" in log and "restored the data position" in log, log
  assert_same_checkpoint(straight, resumed, 18)
  print(f"SIGTERM stopped the two-replica run at step {step} of 18")
