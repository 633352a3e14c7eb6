"""TEST ONLY: a tiny random network in place of the 2015-12-05 Inception network.

evaluate.py's `--inception_standin=N` loads it from here, so the evaluation
plumbing runs in seconds without the weights; the library never imports it.
"""

import math

import numpy as np
import tensorflow as tf

from sagan_tf import metrics

SOURCE = "standin"
NOTE = "TEST ONLY random stand-in network: these numbers are not FID/IS"


def standin_network(dim=2048, seed=0, batch_size=50):
  """A `metrics.InceptionNetwork` over a random conv net: `dim` "pool_3" features, 1008 logits.

  Its numbers mean nothing and are never comparable to published FID or IS
  (2048 features have Inception's shapes); fewer keep FID's matrix square
  root cheap in tests.

  Args:
    dim: number of pool features.
    seed: seed of the fixed random weights.
    batch_size: images per forward pass.
  """
  rng = np.random.default_rng(seed)
  conv1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 16)), tf.float32)
  conv2 = tf.constant(rng.normal(0, 0.1, (3, 3, 16, 32)), tf.float32)
  dense = tf.constant(rng.normal(0, 0.2, (32, dim)), tf.float32)
  logits = tf.constant(rng.normal(0, 0.05 * math.sqrt(2048 / dim), (dim, 1008)), tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
               autograph=False)
  def forward(images):
    x = tf.image.resize(images / 127.5 - 1.0, [32, 32])
    x = tf.nn.relu(tf.nn.conv2d(x, conv1, 2, "SAME"))
    x = tf.nn.relu(tf.nn.conv2d(x, conv2, 2, "SAME"))
    pool = tf.nn.relu(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), dense))
    return {"pool_3": pool, "logits": tf.matmul(pool, logits)}

  return metrics.InceptionNetwork(forward, f"{SOURCE}:{dim}:{seed}", SOURCE, True, batch_size)


def load_standin(dim, batch_size=50):
  """(network, description) in the form of `evaluation.load_feature_network`'s result."""
  network = standin_network(dim=int(dim), batch_size=batch_size)
  return network, {"source": SOURCE, "path": network.path, "sha1": network.path, "note": NOTE}
