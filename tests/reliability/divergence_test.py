"""NaN and Inf: the run stops naming the steps and losses, checkpoints untouched, or rolls back."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import run_dir
from sagan_tf.training import trainer as trainer_lib
from tests.reliability import constant_batches, digests, tiny_config


def poison(trainer, chunks, variable, record):
  """Fills `variable` with NaN before the given 1-based chunks, snapshotting the checkpoints first.

  A test-only hook around the compiled loop: the NaN appears after the
  checkpoint of the previous chunk, as a divergence would.
  """
  real_loop = trainer.train_step.loop
  calls = []

  def loop(*args):
    calls.append(None)
    if len(calls) in chunks:
      record.append(digests(trainer.checkpoint_dir))
      variable.assign(tf.fill(variable.shape, float("nan")))
    return real_loop(*args)

  trainer.train_step.loop = loop


def d_kernel(trainer):
  """D's last kernel: a NaN there reaches the logits and the losses directly.

  (A NaN in an earlier kernel is caught by the weight check all the same,
  but whether it reaches the loss depends on the kernels: one in D's first
  kernel was seen to give zero logits and d_loss=2.)
  """
  return next(v for v in trainer.discriminator.trainable_variables
              if "d_sn_linear" in v.path and v.path.endswith("kernel"))


def test_nan_stops_naming_the_steps_and_leaves_the_checkpoints_alone(tmp_path):
  logs, snapshots = [], []
  trainer = trainer_lib.Trainer(tiny_config(), str(tmp_path), constant_batches, log=logs.append)
  poison(trainer, {2}, d_kernel(trainer), snapshots)
  with pytest.raises(trainer_lib.DivergenceError) as raised:
    trainer.train()
  message = str(raised.value)
  assert "non-finite loss or weight between steps 2 and 4" in message
  assert "d_loss=nan" in message and "g_loss=nan" in message
  assert message.endswith("(--on_nan=rollback retries from it automatically)")
  assert "ckpt-2" in message
  # Nothing written after the NaN: same files, bytes and modification times.
  assert digests(trainer.checkpoint_dir) == snapshots[0]
  assert os.path.basename(run_dir.latest_checkpoint(str(tmp_path))) == "ckpt-2"
  assert not [line for line in logs if line.startswith("saved checkpoint") and "ckpt-4" in line]


def test_nan_in_the_weight_average_is_never_saved(tmp_path):
  # The EMA generator enters no loss: the check before each save catches it.
  snapshots = []
  trainer = trainer_lib.Trainer(tiny_config(), str(tmp_path), constant_batches, log=lambda _: None)
  poison(trainer, {2}, trainer.ema_generator.trainable_variables[0], snapshots)
  with pytest.raises(trainer_lib.DivergenceError, match="weight average or optimizer slot at step 4"):
    trainer.train()
  assert digests(trainer.checkpoint_dir) == snapshots[0]


def test_rollback_restores_the_last_checkpoint_reseeds_and_finishes(tmp_path):
  logs, snapshots = [], []
  trainer = trainer_lib.Trainer(tiny_config(), str(tmp_path), constant_batches, log=logs.append,
                                on_nan="rollback")
  kernel = d_kernel(trainer)
  poison(trainer, {3}, kernel, snapshots)
  trainer.train()
  assert int(trainer.step.numpy()) == 8
  assert trainer.rollbacks == 1
  rolled = [line for line in logs if "rolled back" in line]
  assert len(rolled) == 1 and "between steps 4 and 6" in rolled[0]
  assert "rolled back to step 4 (rollback 1 of 3) and reseeded the noise" in rolled[0]
  assert np.all(np.isfinite(kernel.numpy()))
  assert os.path.basename(run_dir.latest_checkpoint(str(tmp_path))) == "ckpt-8"
  # ckpt-0 first: on_nan=rollback keeps a state to return to from the start.
  saved = [line.rsplit("/", 1)[1] for line in logs if line.startswith("saved checkpoint")]
  assert saved == ["ckpt-0 (the state a rollback returns to)", "ckpt-2", "ckpt-4", "ckpt-6",
                   "ckpt-8"]


def test_rollbacks_are_capped(tmp_path):
  logs, snapshots = [], []
  trainer = trainer_lib.Trainer(tiny_config(), str(tmp_path), constant_batches, log=logs.append,
                                on_nan="rollback", max_rollbacks=2)
  poison(trainer, {2, 3, 4, 5}, d_kernel(trainer), snapshots)
  with pytest.raises(trainer_lib.DivergenceError, match=r"after 2 rollback\(s\) \(the cap"):
    trainer.train()
  assert len([line for line in logs if "rolled back to step 2" in line]) == 2
  assert digests(trainer.checkpoint_dir) == snapshots[0]


def test_rollback_without_a_checkpoint_saves_step_zero_first(tmp_path):
  logs, snapshots = [], []
  trainer = trainer_lib.Trainer(tiny_config(checkpoint_every=100, train_steps=4), str(tmp_path),
                                constant_batches, log=logs.append, on_nan="rollback")
  poison(trainer, {1}, d_kernel(trainer), snapshots)
  trainer.train()
  assert any("ckpt-0 (the state a rollback returns to)" in line for line in logs)
  assert any("rolled back to step 0" in line for line in logs)
  assert int(trainer.step.numpy()) == 4
