"""Tests of the crop, resize and value mapping every data source shares."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import data
from sagan_tf.data import preprocessing


@pytest.mark.parametrize("height,width,top,left", [
    (7, 12, 0, 2),  # wide: (12 - 7) // 2 = 2 columns cut on the left
    (10, 6, 2, 0),  # tall, even difference
    (9, 6, 1, 0),   # tall, odd difference: floor(3 / 2) = 1
])
def test_center_crop_matches_numpy_slice(height, width, top, left):
  image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
  side = min(height, width)
  expected = image[top:top + side, left:left + side].astype(np.float32)
  # A same-sized bilinear resize returns the crop unchanged.
  np.testing.assert_array_equal(data.center_crop_resize(image, side).numpy(), expected)


def test_center_crop_with_unknown_shape_in_a_graph():
  image = np.random.default_rng(1).integers(0, 256, (9, 6, 3), dtype=np.uint8)
  crop = tf.function(lambda x: data.center_crop_resize(x, 6),
                     input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  np.testing.assert_array_equal(crop(image).numpy(), image[1:7].astype(np.float32))


def test_resize_of_constant_image_stays_constant():
  image = np.full((37, 53, 3), 200, np.uint8)
  out = data.center_crop_resize(image, 16).numpy()
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, 200.0, atol=1e-4)


def test_halving_resize_averages_two_by_two_blocks():
  # Bilinear with half-pixel centres samples each output pixel exactly between
  # four input pixels when the size halves.
  image = np.random.default_rng(2).uniform(0, 255, (8, 8, 1)).astype(np.float32)
  expected = image.reshape(4, 2, 4, 2, 1).mean(axis=(1, 3))
  np.testing.assert_allclose(data.center_crop_resize(image, 4).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_center_crop_resize_rejects_bad_size():
  with pytest.raises(ValueError, match="image_size"):
    data.center_crop_resize(np.zeros((4, 4, 3), np.uint8), 0)


def test_to_unit_range_end_points():
  pixels = np.arange(256, dtype=np.uint8)
  out = data.to_unit_range(pixels).numpy()
  assert out.dtype == np.float32
  assert out[0] == -1.0 and out[255] == 1.0
  assert out.min() >= -1.0 and out.max() <= 1.0
  np.testing.assert_allclose(out, pixels / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_allclose(data.to_unit_range(np.float32(127.5)).numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_to_rgb(channels):
  image = np.arange(2 * 2 * channels, dtype=np.uint8).reshape(2, 2, channels)
  out = preprocessing.to_rgb(tf.constant(image)).numpy()
  assert out.shape == (2, 2, 3)
  if channels < 3:
    np.testing.assert_array_equal(out, np.repeat(image[..., :1], 3, axis=-1))
  else:
    np.testing.assert_array_equal(out, image[..., :3])
