"""The train and profile benchmarks: the step train.py runs, timed and traced by op."""

import math
import os
import statistics
import tempfile
import time

from bench import common


def bench_train(spec):
  """Training images/second of one (preset, mode, dtype, strategy) at one batch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bench import flops  # pylint: disable=g-import-not-at-top
  config = common.experiment(spec)
  if (spec["mode"] == "xla" and spec["strategy"] == "mirrored"
      and not tf.config.list_logical_devices("GPU")):
    common.emit({"name": "train", "preset": spec["preset"], "mode": "xla", "dtype": spec["dtype"],
                  "strategy": "mirrored", "replicas": 2, "batch": config.train.batch_size,
                  "status": "skipped",
                  "note": "XLA under MirroredStrategy on logical CPU devices fails; needs GPUs"})
    return
  strategy = common.make_strategy(config)
  replicas = strategy.num_replicas_in_sync
  build_start = time.perf_counter()
  step = common.build_step(config, strategy)
  iterator = common.synthetic_iterator(strategy, config)
  build_seconds = time.perf_counter() - build_start
  steps = spec["steps"]
  if spec["mode"] == "eager":
    # The replica function's Python body, op by op, under the same strategy.run.
    def run(num_steps):
      step.metric_sums.assign(tf.zeros_like(step.metric_sums))
      for _ in range(num_steps):
        batches = tuple(next(iterator) for _ in range(config.train.d_steps))
        strategy.run(step._replica_iteration, args=(batches,))  # pylint: disable=protected-access
      return float(step.metric_sums.read_value()[0])
  else:
    def run(num_steps):
      return float(step.loop(iterator, tf.constant(num_steps, tf.int32))["d_loss"])

  warmup_start = time.perf_counter()
  run(1)  # Tracing, XLA compilation and first-touch allocations.
  warmup_seconds = time.perf_counter() - warmup_start
  if spec["mode"] != "eager":
    run(0)  # Another num_steps value: must not retrace.
  losses, cpu_seconds = [], []
  seconds = common.timed(lambda: losses.append(run(steps)), spec["repeats"], cpu_seconds)
  last_loss = losses[-1]
  median = statistics.median(seconds)
  counts = flops.iteration_flops(config.model, config.train.batch_size)
  images_per_second = config.train.batch_size * steps / median
  common.emit({
      "name": "train", "preset": spec["preset"], "mode": spec["mode"], "dtype": spec["dtype"],
      "strategy": spec["strategy"], "replicas": replicas, "batch": config.train.batch_size,
      "width": config.model.g_width, "steps": steps, "repeats": spec["repeats"],
      "images_per_second": images_per_second, "seconds": median,
      "chunk_seconds": [round(s, 4) for s in seconds],
      # On a busy machine, images per CPU-second times the core count roughly
      # estimates the idle rate (threads that spin-wait or scale badly skew it).
      "chunk_cpu_seconds": [round(s, 4) for s in cpu_seconds],
      "images_per_cpu_second": config.train.batch_size * steps / statistics.median(cpu_seconds),
      "build_seconds": build_seconds,
      "warmup_seconds": warmup_seconds, "flops_per_image": counts["flops_per_image"],
      "flops_per_second": counts["flops_per_image"] * images_per_second,
      "loop_trace_count": (None if spec["mode"] == "eager"
                           else step.loop.experimental_get_tracing_count()),
      "finite_loss": math.isfinite(last_loss)})


def _op_times(logdir, first_phase, second_phase):
  """Summed op seconds from the newest profiler trace in `logdir`, by op type, part and layer.

  Op events are named "<scope>/<op name>:<op type>". TrainStep's replica
  function opens the name scopes d_update and g_update; gradient ops sit
  under gradient_tape/. Keras' "_1" call suffixes are dropped from scope
  names.
  """
  import glob  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = max(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True),
             key=os.path.getmtime)
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  tables = {"op_type": {}, "part": {}, "layer": {}}

  def add(table, key, seconds):
    tables[table][key] = tables[table].get(key, 0.0) + seconds

  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if ":" not in name or "::" in name or " " in name:
          continue
        op_name, op_type = name.rsplit(":", 1)
        seconds = event.duration_ps * 1e-12
        add("op_type", op_type, seconds)
        phase, direction, scope = "loop", "forward", []
        for part in op_name.split("/")[:-1]:
          bare = re.sub(r"_\d+$", "", part)
          if bare in (first_phase, second_phase):
            phase = bare
          elif part == "gradient_tape":
            direction = "backward"
          elif (part not in ("while", "body", "StatefulPartitionedCall")
                and not re.fullmatch(r"_\d+", part)):
            scope.append(re.sub(r"_\d+$", "", part))
        model = scope[0] if scope else "other"
        if model not in ("generator", "discriminator"):
          model, direction = "other (optimizer, metrics)", ""
        add("part", " ".join(p for p in (phase, direction, model) if p), seconds)
        add("layer", f"{phase} {direction or '-'} " + "/".join(scope[:3]), seconds)
  return tables


def bench_profile(spec):
  """Where one training iteration's time goes: op types and layers from a profiler trace."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = common.experiment(spec)
  strategy = common.make_strategy(config)
  step = common.build_step(config, strategy)
  iterator = common.synthetic_iterator(strategy, config)

  def run(num_steps):
    return float(step.loop(iterator, tf.constant(num_steps, tf.int32))["d_loss"])

  run(1)
  phases = ("g_update", "d_update") if config.train.g_first else ("d_update", "g_update")
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    run(spec["steps"])
    seconds = time.perf_counter() - start
    tf.profiler.experimental.stop()
    tables = _op_times(logdir, *phases)
  total = sum(tables["op_type"].values())
  top = spec.get("top", 15)

  def shares(table):
    ranked = sorted(table.items(), key=lambda item: -item[1])[:top]
    return [[name, round(value / spec["steps"], 4), round(value / total, 4)] for name, value in ranked]

  common.emit({"name": "profile", "preset": spec["preset"], "mode": spec["mode"],
               "dtype": spec["dtype"], "strategy": spec["strategy"],
               "batch": config.train.batch_size, "steps": spec["steps"],
               "seconds": seconds / spec["steps"], "op_seconds_per_iteration": total / spec["steps"],
                "images_per_second": config.train.batch_size * spec["steps"] / seconds,
                "top_op_types": shares(tables["op_type"]), "top_parts": shares(tables["part"]),
                "top_layers": shares(tables["layer"])})
