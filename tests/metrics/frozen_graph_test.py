"""Tests for the frozen-graph path on a tiny stand-in with the original tensor names."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.metrics import frozen_graph
from sagan_tf.metrics import inception

_CHANNELS = 6
_CLASSES = 5


def _stand_in_graph_def(rng):
  """Mimics classify_image_graph_def.pb: JPEG input, batch-1 reshape before the logits."""
  kernel = rng.normal(size=(1, 1, 3, _CHANNELS)).astype(np.float32)
  weights = rng.normal(size=(_CHANNELS, _CLASSES)).astype(np.float32)
  biases = rng.normal(size=(_CLASSES,)).astype(np.float32)
  graph = tf.Graph()
  with graph.as_default():
    contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
    decoded = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
    image = tf.cast(decoded, tf.float32, name="Cast")
    batch = tf.expand_dims(image, 0, name="ExpandDims")
    resized = tf.raw_ops.ResizeBilinear(
        images=batch, size=tf.constant([299, 299], name="ResizeBilinear/size"),
        align_corners=False, half_pixel_centers=False, name="ResizeBilinear")
    scaled = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
    conv = tf.nn.relu(tf.nn.conv2d(scaled, kernel, 1, "VALID", name="conv/Conv2D"),
                      name="conv/CONV")
    pool = tf.nn.avg_pool2d(conv, 299, 299, "VALID", name="pool_3")
    flat = tf.reshape(pool, [1, _CHANNELS], name="pool_3/_reshape")
    matmul = tf.matmul(flat, tf.constant(weights, name="softmax/weights"),
                       name="softmax/logits/MatMul")
    logits = tf.nn.bias_add(matmul, tf.constant(biases, name="softmax/biases"),
                            name="softmax/logits")
    tf.nn.softmax(logits, name="softmax")
  return graph.as_graph_def(add_shapes=True), kernel[0, 0], weights


def test_stand_in_graph_gives_pool_3_and_logits(tmp_path):
  graph_def, kernel, weights = _stand_in_graph_def(np.random.default_rng(0))
  path = tmp_path / "classify_image_graph_def.pb"
  path.write_bytes(graph_def.SerializeToString())
  network = inception.load_inception(str(path), batch_size=2)
  assert network.source == "frozen_graph" and network.has_logits
  images = np.random.default_rng(1).integers(0, 256, size=(3, 20, 30, 3), dtype=np.uint8)
  out = network(images)
  scaled = inception.resize_and_normalize(images).numpy()
  pool_3 = np.maximum(scaled @ kernel, 0).mean(axis=(1, 2))
  np.testing.assert_allclose(out["pool_3"], pool_3, rtol=1e-5, atol=1e-6)
  # The logits skip the graph's softmax bias, like OpenAI's Inception Score code.
  np.testing.assert_allclose(out["logits"], pool_3 @ weights, rtol=1e-5, atol=1e-6)
  assert out["pool_3"].dtype == np.float32 and out["logits"].shape == (3, _CLASSES)


def test_jit_compiled_forward(tmp_path):
  graph_def, kernel, _ = _stand_in_graph_def(np.random.default_rng(2))
  path = tmp_path / "graph.pb"
  path.write_bytes(graph_def.SerializeToString())
  network = inception.load_inception(str(path), jit_compile=True)
  images = np.random.default_rng(3).uniform(0, 255, size=(2, 16, 16, 3)).astype(np.float32)
  expected = np.maximum(inception.resize_and_normalize(images).numpy() @ kernel, 0)
  # XLA sums the 299x299 pool in another order, hence the looser tolerance.
  np.testing.assert_allclose(network(images)["pool_3"], expected.mean(axis=(1, 2)), rtol=1e-4,
                             atol=1e-6)


def test_graph_without_inception_nodes_names_the_file(tmp_path):
  graph = tf.Graph()
  with graph.as_default():
    tf.constant(1.0, name="ExpandDims")
  path = tmp_path / "other_graph.pb"
  path.write_bytes(graph.as_graph_def().SerializeToString())
  with pytest.raises(ValueError, match=r"other_graph.pb .*\['pool_3', 'softmax/logits/MatMul'\]"):
    frozen_graph.read_graph_def(str(path))


def test_truncated_graph_names_the_file(tmp_path):
  graph_def, _, _ = _stand_in_graph_def(np.random.default_rng(4))
  path = tmp_path / "classify_image_graph_def.pb"
  path.write_bytes(graph_def.SerializeToString()[:-7])
  with pytest.raises(ValueError, match="classify_image_graph_def.pb.*truncated or corrupt"):
    inception.load_inception(str(path))
