"""A tiny in-process experiment for Trainer tests: a 32-pixel, width-8, 3-class model on one CPU."""

import dataclasses

import numpy as np
import tensorflow as tf

from sagan_tf import configs

NUM_CLASSES = 3
IMAGE_SIZE = 32


def tiny_config(**train_values):
  """A 32-pixel, width-8, 3-class experiment on one CPU with an EMA generator, 2 steps per chunk.

  Float32, no DiffAugment and no evaluation, whatever the preset's defaults:
  tests compare numbers and ask for those themselves.
  """
  config = configs.PRESETS["animal_mnist"]()
  train_values = {"batch_size": 4, "steps_per_loop": 2, "checkpoint_every": 2, "sample_every": 100,
                  "summary_every": 100, "ema_decay": 0.5, "ema_start_step": 0, "train_steps": 8,
                  "eval_every": 0, "diffaugment": "", **train_values}
  return dataclasses.replace(
      config,
      model=dataclasses.replace(config.model, num_classes=NUM_CLASSES, g_width=8, d_width=8,
                                z_dim=16),
      train=dataclasses.replace(config.train, **train_values),
      runtime=dataclasses.replace(config.runtime, strategy="one_device", mixed_precision="float32"))


def constant_batches(context, per_replica_batch):
  """The same real batch forever (the data position then plays no part)."""
  del context
  rng = np.random.default_rng(5)
  images = rng.uniform(-1.0, 1.0, (per_replica_batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  labels = (np.arange(per_replica_batch) % NUM_CLASSES).astype(np.int32)
  return tf.data.Dataset.from_tensors((images, labels)).repeat()
