"""Improved precision and recall (Kynkaanniemi et al., 2019) with k-NN feature manifolds."""

import numpy as np


def _squared_distances(a, b):
  """Squared Euclidean distances between rows of `a` and rows of `b`, clipped at 0."""
  d2 = (np.sum(a * a, axis=1)[:, None] - 2.0 * (a @ b.T) + np.sum(b * b, axis=1)[None, :])
  return np.maximum(d2, 0.0)


def knn_radii(features, k=3, batch_size=256):
  """Squared distance from each sample to its k-th nearest other sample.

  Args:
    features: Array of shape `(num_samples, dim)`, num_samples > k.
    k: Neighbour rank.
    batch_size: Rows of the distance matrix held at once.

  Returns:
    float64 array of shape `(num_samples,)`.
  """
  features = np.asarray(features, np.float64)
  radii = []
  for start in range(0, features.shape[0], batch_size):
    d2 = _squared_distances(features[start:start + batch_size], features)
    # Column k of the partition skips the sample itself, which sits at distance 0.
    radii.append(np.partition(d2, k, axis=1)[:, k])
  return np.concatenate(radii)


def manifold_coverage(manifold, radii, queries, batch_size=256):
  """Fraction of `queries` inside at least one k-NN ball of `manifold`.

  Args:
    manifold: Array of shape `(num_manifold, dim)`.
    radii: Squared ball radii from `knn_radii(manifold)`, shape `(num_manifold,)`.
    queries: Array of shape `(num_queries, dim)`.
    batch_size: Query rows held at once.

  Returns:
    The fraction as a Python float.
  """
  manifold = np.asarray(manifold, np.float64)
  queries = np.asarray(queries, np.float64)
  inside = 0
  for start in range(0, queries.shape[0], batch_size):
    d2 = _squared_distances(queries[start:start + batch_size], manifold)
    inside += int(np.count_nonzero(np.any(d2 <= radii[None, :], axis=1)))
  return inside / queries.shape[0]


def precision_recall(real_features, fake_features, k=3, batch_size=256):
  """Improved precision and recall of generated samples against real ones.

  Precision is the share of generated samples within the k-NN manifold of the real
  samples; recall the share of real samples within that of the generated ones.

  Args:
    real_features: Array of shape `(num_real, dim)`, num_real > k.
    fake_features: Array of shape `(num_fake, dim)`, num_fake > k.
    k: Neighbour rank that sets each ball's radius (the paper uses 3).
    batch_size: Rows of each pairwise-distance block; memory is about
      `8 * batch_size * max(num_real, num_fake)` bytes.

  Returns:
    Tuple `(precision, recall)`, Python floats in [0, 1].

  Raises:
    ValueError: If the sets are not 2-D with one width, or have no more than k rows.

  Reference:
    Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing Generative
    Models", NeurIPS 2019, section 2.
  """
  real = np.asarray(real_features, np.float64)
  fake = np.asarray(fake_features, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"Feature sets must be (num_samples, dim) with one dim. Received: "
                     f"shapes {real.shape} and {fake.shape}")
  if k < 1 or min(real.shape[0], fake.shape[0]) <= k:
    raise ValueError(f"Each set needs more than k rows and k must be positive. Received: "
                     f"k={k}, set sizes {real.shape[0]} and {fake.shape[0]}")
  precision = manifold_coverage(real, knn_radii(real, k, batch_size), fake, batch_size)
  recall = manifold_coverage(fake, knn_radii(fake, k, batch_size), real, batch_size)
  return precision, recall
