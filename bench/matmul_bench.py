"""The matmul benchmark: this machine's practical FLOP/s, against which training's are compared."""

from bench import common


def bench_matmul_peak(spec):
  """Best FLOP/s of chained n x n matmuls in one tf.function, the machine's practical peak."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n, chain = spec["n"], spec["chain"]
  rng = np.random.default_rng(0)
  # An orthogonal factor keeps the chained product's norm fixed; a chain
  # rather than repeats of one product, which grappler would fold into one.
  q, _ = np.linalg.qr(rng.standard_normal((n, n)))

  @tf.function
  def product(x, b):
    for _ in tf.range(chain):
      x = tf.matmul(x, b)
    return x

  for dtype in spec["dtypes"]:
    x = tf.cast(tf.constant(rng.standard_normal((n, n)), tf.float32), dtype)
    b = tf.cast(tf.constant(q, tf.float32), dtype)
    product(x, b).numpy()
    seconds = common.timed(lambda: product(x, b).numpy(),  # pylint: disable=cell-var-from-loop
                           spec["repeats"])
    best = min(seconds)
    common.emit({"name": "matmul_peak", "dtype": dtype, "n": n, "chain": chain,
                  "flops_per_second": 2 * n ** 3 * chain / best, "seconds": best,
                  "all_seconds": [round(s, 4) for s in seconds]})
