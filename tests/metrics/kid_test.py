"""Tests for the Kernel Inception Distance."""

import numpy as np
import pytest

from sagan_tf.metrics import kid


def _kernel(a, b):
  return (sum(p * q for p, q in zip(a, b)) / len(a) + 1.0) ** 3


def _loop_mmd2(x, y):
  m, n = len(x), len(y)
  xx = sum(_kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(_kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  xy = sum(_kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return xx + yy - 2 * xy


def test_mmd2_matches_double_loop():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(6, 4)), rng.normal(1.0, size=(5, 4))
  assert kid.mmd2_unbiased(x, y) == pytest.approx(_loop_mmd2(x.tolist(), y.tolist()), rel=1e-12)


def test_full_size_subsets_equal_the_whole_set_estimate():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(5, 3)), rng.normal(0.5, size=(5, 3))
  # Subsets of every row are permutations, which leave the estimate unchanged.
  mean, std = kid.kernel_inception_distance(x, y, num_subsets=4, subset_size=1000)
  assert mean == pytest.approx(_loop_mmd2(x.tolist(), y.tolist()), rel=1e-12)
  assert std == pytest.approx(0.0, abs=1e-12)


def test_subsets_are_seeded():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
  first = kid.kernel_inception_distance(x, y, num_subsets=5, subset_size=10, seed=7)
  second = kid.kernel_inception_distance(x, y, num_subsets=5, subset_size=10, seed=7)
  assert first == second
  assert first[1] > 0


def test_shifted_distribution_scores_higher():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(200, 8))
  same = kid.kernel_inception_distance(x, rng.normal(size=(200, 8)), num_subsets=10)[0]
  shifted = kid.kernel_inception_distance(x, rng.normal(2.0, size=(200, 8)), num_subsets=10)[0]
  assert abs(same) < 0.05 < shifted


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match="dim"):
    kid.kernel_inception_distance(np.zeros((4, 2)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="at least 2"):
    kid.kernel_inception_distance(np.zeros((1, 2)), np.zeros((4, 2)))
