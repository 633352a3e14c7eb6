"""The flops benchmark: analytic FLOPs per preset, checked by TF's profiler on one config."""

import time

from bench import common


def bench_flops(spec):
  """Analytic FLOPs per preset, and TF's profiler count of one config's graphs to check them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bench import flops  # pylint: disable=g-import-not-at-top
  for preset, batch in spec["batches"]:
    config = common.experiment({"preset": preset, "batch": batch})
    counts = flops.iteration_flops(config.model, batch)
    common.emit({"name": "flops", "preset": preset, "batch": batch, "width": config.model.g_width,
                  "seconds": 0.0, **counts})
  check = spec["check"]
  config = common.experiment(check)
  step = common.build_step(config, tf.distribute.get_strategy())
  size, batch = config.model.image_size, check["batch"]
  images = tf.TensorSpec([batch, size, size, 3], tf.float32)
  labels = tf.TensorSpec([batch], tf.int32)
  z = tf.TensorSpec([batch, config.model.z_dim], tf.float32)
  both = tf.TensorSpec([2 * batch, size, size, 3], tf.float32)
  both_labels = tf.TensorSpec([2 * batch], tf.int32)
  generator, discriminator = step.generator, step.discriminator
  counts = flops.iteration_flops(config.model, batch)
  graphs = {
      "g_forward": (tf.function(lambda z, y: generator(z, y, training=True)), (z, labels),
                    flops.forward_flops(config.model, batch, "G")),
      "d_forward_2b": (tf.function(lambda x, y: discriminator(x, y, training=True)),
                       (both, both_labels), flops.forward_flops(config.model, 2 * batch, "D")),
      # The two updates together are one iteration.
      "d_update": (tf.function(step._d_update), (images, labels), counts["d_update_flops"]),  # pylint: disable=protected-access
      # A Python batch size, so that the traced graph has static shapes to count.
      "g_update": (tf.function(step._g_update), (batch,), counts["g_update_flops"]),  # pylint: disable=protected-access
  }
  profiled = {}
  for name, (function, signature, analytic) in graphs.items():
    start = time.perf_counter()
    total, matmul, by_type = flops.profile_float_ops(function.get_concrete_function(*signature))
    profiled[name] = matmul
    common.emit({"name": "flops", "preset": check["preset"], "batch": batch,
                  "width": config.model.g_width, "graph": name, "profiler_float_ops": total,
                  "profiler_matmul_flops": matmul, "analytic_flops": analytic,
                  "profiler_by_type": by_type, "seconds": time.perf_counter() - start})
  iteration = profiled["d_update"] + profiled["g_update"]
  common.emit({"name": "flops", "preset": check["preset"], "batch": batch,
               "width": config.model.g_width, "graph": "iteration",
               "profiler_matmul_flops": iteration, "analytic_flops": counts["flops_per_iteration"],
               "flops_per_image": counts["flops_per_image"],
               "profiler_flops_per_image": iteration / batch, "seconds": 0.0})
