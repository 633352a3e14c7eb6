"""The evaluation benchmarks: the FID Inception network's throughput and FID's numpy part."""

import os
import statistics
import time

import numpy as np

from bench import common


def _inception_flops_per_image(model):
  """2 x the multiply-adds of the network's convolutions per 299x299 image (the rest is <1%)."""
  total = 0
  for layer in model.layers:
    if hasattr(layer, "kernel_size"):
      _, rows, cols, out = layer.output.shape
      total += 2 * rows * cols * int(np.prod(layer.kernel.shape[:3])) * out
  return total


def _random_images(batch):
  """The benchmark's input: random 32x32 images in [0, 255], float32."""
  return np.random.default_rng(0).uniform(0, 255, (batch, 32, 32, 3)).astype(np.float32)


def bench_inception(spec):
  """pool_3 features/second of the FID Inception network on 32x32 inputs (resized to 299 inside).

  spec["network"]: "folded" (what evaluate.py runs) or "unfolded" (separate batch-norm
  layers, the network before folding), both in TF; "torch" runs the same TorchScript
  file under PyTorch for comparison.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  from sagan_tf.metrics import inception  # pylint: disable=g-import-not-at-top
  record = {"name": "inception", "network": spec["network"], "batch": spec["batch"],
            "dtype": "float32",
            "flops_per_image": _inception_flops_per_image(inception.build_inception_network())}
  try:
    path = metrics.find_inception_weights()
  except metrics.InceptionWeightsNotFoundError as error:
    common.emit(dict(record, status="skipped", note=str(error).split(". ")[0]))
    return
  if spec["network"] == "torch":
    _bench_inception_torch(spec, record, path)
    return
  network = metrics.load_inception(path, fold_batch_norm=spec["network"] == "folded")
  images = tf.constant(_random_images(spec["batch"]))
  network.forward(images)["pool_3"].numpy()
  cpu_seconds = []
  seconds = common.timed(lambda: network.forward(images)["pool_3"].numpy(), spec["repeats"],
                         cpu_seconds)
  median = statistics.median(seconds)
  common.emit(dict(record, images_per_second=spec["batch"] / median, seconds=median,
                    all_seconds=[round(s, 3) for s in seconds],
                    cpu_seconds=statistics.median(cpu_seconds), source=network.source))


def _bench_inception_torch(spec, record, path):
  """The TorchScript file under `torch.jit.load` on 2 threads; skipped when torch is absent."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    common.emit(dict(record, status="skipped", note="torch is not installed (comparison only)"))
    return
  from sagan_tf.metrics import inception  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  module = torch.jit.load(path).eval()
  # The port takes NCHW images already resized and normalised; the legacy resize
  # (about 0.1% of the TF network's time) is done once, outside the timing.
  resized = inception.resize_and_normalize(_random_images(spec["batch"])).numpy()
  images = torch.from_numpy(np.ascontiguousarray(resized.transpose(0, 3, 1, 2)))
  with torch.inference_mode():
    module(images)
    cpu_seconds = []
    seconds = common.timed(lambda: module(images), spec["repeats"], cpu_seconds)
  median = statistics.median(seconds)
  common.emit(dict(record, images_per_second=spec["batch"] / median, seconds=median,
                    all_seconds=[round(s, 3) for s in seconds],
                    cpu_seconds=statistics.median(cpu_seconds), source="torch " + torch.__version__))


def bench_fid(spec):
  """Seconds of FID's statistics and matrix square root on random features."""
  import importlib.util  # pylint: disable=g-import-not-at-top
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
