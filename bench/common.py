"""What every benchmark process shares: records, the timer, the config, strategy and step."""

import dataclasses
import json
import os
import resource
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The preset of each image size.
PRESET_NAMES = {32: "cifar10", 64: "celeb_a", 128: "imagenet2012"}
# A worker's stdout line that starts with this carries one JSON record.
RECORD_PREFIX = "@@bench "


def split_cpu():
  """Two logical CPUs for MirroredStrategy; must run before anything initialises TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def emit(record):
  """Prints one record for the orchestrator, with this process's peak memory."""
  # ru_maxrss is in KiB on Linux: the peak of this process, i.e. of this benchmark.
  peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  record = dict(record, peak_rss_mb=round(peak_rss_kib / 1024, 1))
  print(RECORD_PREFIX + json.dumps(record), flush=True)


def timed(fn, repeats, cpu_seconds=None):
  """Wall seconds of each of `repeats` calls of fn (which must block until its work is done).

  Appends each call's CPU seconds (all threads of this process) to `cpu_seconds`.
  """
  seconds = []
  for _ in range(repeats):
    cpu_start, start = time.process_time(), time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - start)
    if cpu_seconds is not None:
      cpu_seconds.append(time.process_time() - cpu_start)
  return seconds


def experiment(spec):
  """The preset's ExperimentConfig with the benchmark's width, batch and d_steps=1."""
  from sagan_tf.configs import presets  # pylint: disable=g-import-not-at-top
  config = presets.PRESETS[PRESET_NAMES[spec["preset"]]]()
  model = config.model
  if spec.get("width"):
    model = dataclasses.replace(model, g_width=spec["width"], d_width=spec["width"])
  # One "image" is one real image through one D and one G update, so d_steps=1
  # even for presets that train with more (celeb_a's 5).
  train = dataclasses.replace(config.train, batch_size=spec["batch"], d_steps=1, ema_decay=0.0)
  runtime = dataclasses.replace(
      config.runtime, seed=0, strategy=spec.get("strategy", "one_device"),
      tpu=spec.get("tpu", ""), mixed_precision=spec.get("dtype", "float32"),
      jit_compile=spec.get("mode") == "xla")
  return dataclasses.replace(config, model=model, train=train, runtime=runtime)


def make_strategy(config):
  """The run's strategy, from the Trainer's own factory ("mirrored" spans the logical CPUs)."""
  from sagan_tf.training import trainer  # pylint: disable=g-import-not-at-top
  return trainer.make_strategy(config.runtime)


def build_step(config, strategy):
  """The `TrainStep` train.py runs, from the Trainer's own builder, without a run directory."""
  from sagan_tf.training.components import build_components  # pylint: disable=g-import-not-at-top
  return build_components(config, strategy).train_step


def synthetic_iterator(strategy, config):
  """A distributed iterator of one fixed random batch: the step alone, without input cost."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size, num_classes = config.model.image_size, config.model.num_classes

  def make(context):
    batch = context.get_per_replica_batch_size(config.train.batch_size)
    rng = np.random.default_rng(context.input_pipeline_id)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, max(num_classes, 1), (batch,)).astype(np.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()

  return iter(strategy.distribute_datasets_from_function(make))

