"""The evaluation benchmarks: the FID Inception network's throughput and FID's numpy part."""

import os
import statistics
import time

from bench import common


def bench_inception(spec):
  """pool_3 features/second of the FID Inception network on 32x32 inputs (resized to 299 inside)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  record = {"name": "inception", "batch": spec["batch"], "dtype": "float32"}
  try:
    network = metrics.load_inception()
  except metrics.InceptionWeightsNotFoundError as error:
    common.emit(dict(record, status="skipped", note=str(error).split(". ")[0]))
    return
  images = tf.constant(np.random.default_rng(0).uniform(0, 255, (spec["batch"], 32, 32, 3)),
                       tf.float32)
  network.forward(images)["pool_3"].numpy()
  seconds = common.timed(lambda: network.forward(images)["pool_3"].numpy(), spec["repeats"])
  median = statistics.median(seconds)
  common.emit(dict(record, images_per_second=spec["batch"] / median, seconds=median,
                    source=network.source))


def bench_fid(spec):
  """Seconds of FID's statistics and matrix square root on random features."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # fid.py needs only numpy and scipy; loading it by path skips sagan_tf.metrics'
  # __init__, which imports TensorFlow, so the peak memory is FID's own.
  module_spec = importlib.util.spec_from_file_location(
      "fid", os.path.join(common.REPO, "sagan_tf", "metrics", "fid.py"))
  fid = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(fid)
  rng = np.random.default_rng(0)
  samples, dim = spec["samples"], spec["dim"]
  real = rng.standard_normal((samples, dim), dtype=np.float32)
  fake = rng.standard_normal((samples, dim), dtype=np.float32) + 0.1
  start = time.perf_counter()
  mu1, sigma1 = fid.compute_statistics(real)
  mu2, sigma2 = fid.compute_statistics(fake)
  statistics_seconds = time.perf_counter() - start
  start = time.perf_counter()
  distance = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  distance_seconds = time.perf_counter() - start
  common.emit({"name": "fid", "samples": samples, "dim": dim, "dtype": "float64",
               "seconds": statistics_seconds + distance_seconds,
               "statistics_seconds": statistics_seconds,
               "frechet_distance_seconds": distance_seconds, "fid": distance})
