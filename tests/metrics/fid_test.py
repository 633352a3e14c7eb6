"""Tests for the Frechet distance and FID statistics I/O."""

import numpy as np
import pytest

from sagan_tf.metrics import fid


def _random_spd(rng, dim):
  a = rng.normal(size=(dim, dim))
  return a @ a.T + 0.1 * np.eye(dim)


def _psd_sqrt(matrix):
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_diagonal_gaussians_match_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  a, b = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
  # Commuting covariances: the trace term is sum((sqrt(a) - sqrt(b))^2).
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_full_covariances_match_symmetric_form():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
  s1, s2 = _random_spd(rng, 4), _random_spd(rng, 4)
  root1 = _psd_sqrt(s1)
  expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2 * np.trace(_psd_sqrt(root1 @ s2 @ root1)))
  np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-9)


def test_set_with_itself_is_zero():
  features = np.random.default_rng(2).normal(size=(300, 8))
  assert abs(fid.fid_from_features(features, features)) < 1e-8


def test_statistics_are_mean_and_unbiased_covariance():
  features = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
  mu, sigma = fid.compute_statistics(features)
  np.testing.assert_allclose(mu, [2.0, 2.0])
  np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


def test_fewer_samples_than_dimensions_stays_finite():
  rng = np.random.default_rng(3)
  value = fid.fid_from_features(rng.normal(size=(5, 12)), rng.normal(size=(6, 12)))
  assert np.isfinite(value)


def test_invalid_covariances_raise():
  with pytest.raises(ValueError, match="not a covariance matrix"):
    fid.frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="sigma1"):
    fid.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match="num_samples"):
    fid.compute_statistics(np.zeros((1, 4)))


def test_statistics_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  mu, sigma = rng.normal(size=3), _random_spd(rng, 3)
  path = tmp_path / "stats.npz"
  fid.save_statistics(path, mu, sigma, dataset="cifar10", num_images=50000)
  loaded_mu, loaded_sigma, meta = fid.load_statistics(path)
  np.testing.assert_array_equal(loaded_mu, mu)
  np.testing.assert_array_equal(loaded_sigma, sigma)
  assert meta == {"dataset": "cifar10", "num_images": 50000}

