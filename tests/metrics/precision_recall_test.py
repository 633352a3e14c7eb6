"""Tests for improved precision and recall."""

import numpy as np
import pytest

from sagan_tf.metrics.precision_recall import precision_recall


def _loop_coverage(manifold, queries, k):
  radii = []
  for point in manifold:
    distances = sorted(float(np.linalg.norm(point - other)) for other in manifold)
    radii.append(distances[k])  # distances[0] is the point itself
  inside = [any(np.linalg.norm(q - m) <= r + 1e-9 for m, r in zip(manifold, radii))
            for q in queries]
  return sum(inside) / len(queries)


def test_identical_sets_give_one_one():
  features = np.random.default_rng(0).normal(size=(50, 6))
  assert precision_recall(features, features.copy()) == (1.0, 1.0)


def test_disjoint_far_clusters_give_zero_zero():
  rng = np.random.default_rng(1)
  real = rng.normal(size=(30, 4))
  fake = rng.normal(size=(30, 4)) + 1000.0
  assert precision_recall(real, fake) == (0.0, 0.0)


def test_points_on_a_line():
  real = np.stack([np.arange(20.0), np.zeros(20)], axis=1)
  far = np.stack([1000.0 + 0.01 * np.arange(10), np.zeros(10)], axis=1)
  fake = np.concatenate([real[:10], far])
  precision, recall = precision_recall(real, fake, k=3)
  # Half the fakes copy real points; the far half misses every real ball.
  assert precision == 0.5
  # Fake ball radii: 3 at x=9 (neighbours 8, 7, 6), so reals x=0..12 are covered.
  assert recall == pytest.approx(13 / 20)


def test_batched_matches_brute_force():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(23, 3))
  fake = rng.normal(0.7, 1.3, size=(17, 3))
  precision, recall = precision_recall(real, fake, k=3, batch_size=5)
  assert precision == pytest.approx(_loop_coverage(real, fake, 3))
  assert recall == pytest.approx(_loop_coverage(fake, real, 3))


def test_too_few_samples_raise():
  with pytest.raises(ValueError, match="more than k"):
    precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
