"""Kernel Inception Distance (Binkowski et al., 2018): unbiased MMD^2 on feature subsets."""

import numpy as np


def _polynomial_kernel(x, y):
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(features1, features2):
  """Unbiased MMD^2 with the kernel k(x, y) = (x.y / dim + 1)^3.

  Args:
    features1: Array of shape `(m, dim)`, m >= 2.
    features2: Array of shape `(n, dim)`, n >= 2.

  Returns:
    The estimate as a Python float (it can be slightly negative).
  """
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  m, n = x.shape[0], y.shape[0]
  k_xx = _polynomial_kernel(x, x)
  k_yy = _polynomial_kernel(y, y)
  # The unbiased estimator leaves out the i == j terms of the within-set sums.
  sum_xx = k_xx.sum() - np.trace(k_xx)
  sum_yy = k_yy.sum() - np.trace(k_yy)
  return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1))
               - 2.0 * _polynomial_kernel(x, y).mean())


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000,
                              seed=0):
  """Computes KID as the mean and spread of MMD^2 over random subsets.

  Each subset takes `subset_size` rows from each set without replacement (the size is
  clipped to the smaller set), as in Binkowski et al. and torch-fidelity.

  Args:
    features1: Array of shape `(num_samples1, dim)`, e.g. real pool_3 features.
    features2: Array of shape `(num_samples2, dim)`.
    num_subsets: Number of subset pairs.
    subset_size: Rows per subset before clipping.
    seed: Seed of the numpy generator that draws the subsets.

  Returns:
    Tuple `(mean, std)` of the subset estimates, Python floats.

  Raises:
    ValueError: If the feature sets disagree in width, have fewer than 2 rows, or
      `num_subsets` or `subset_size` is below 1 or 2.

  Reference:
    Binkowski et al., "Demystifying MMD GANs", ICLR 2018, section 5.
  """
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"Feature sets must be (num_samples, dim) with one dim. Received: "
                     f"shapes {x.shape} and {y.shape}")
  if num_subsets < 1:
    raise ValueError(f"`num_subsets` must be positive. Received: num_subsets={num_subsets}")
  size = min(subset_size, x.shape[0], y.shape[0])
  if size < 2:
    raise ValueError(f"Subsets need at least 2 rows. Received: subset_size={subset_size}, "
                     f"set sizes {x.shape[0]} and {y.shape[0]}")
  rng = np.random.default_rng(seed)
  estimates = [
      mmd2_unbiased(x[rng.choice(x.shape[0], size, replace=False)],
                    y[rng.choice(y.shape[0], size, replace=False)])
      for _ in range(num_subsets)]
  return float(np.mean(estimates)), float(np.std(estimates))
