"""Frechet Inception Distance (Heusel et al., 2017) from pool_3 features, in float64 numpy."""

import numpy as np
import scipy.linalg

_ARRAY_KEYS = ("mu", "sigma")


def compute_statistics(features):
  """Returns the mean and covariance of a set of feature vectors.

  Args:
    features: Array of shape `(num_samples, dim)`, e.g. pool_3 features.

  Returns:
    Tuple `(mu, sigma)`: float64 arrays of shapes `(dim,)` and `(dim, dim)`; sigma is
    the unbiased sample covariance (divides by `num_samples - 1`, as TTUR does).

  Raises:
    ValueError: If `features` is not 2-D or has fewer than 2 rows.
  """
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError("`features` must have shape (num_samples >= 2, dim). "
                     f"Received: shape={features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _check_positive_semidefinite(eigenvalues, name):
  # Round-off leaves eigenvalues slightly below 0; clearly negative ones mean
  # the input is not a covariance matrix (sqrtm would give imaginary parts).
  scale = max(float(np.max(np.abs(eigenvalues))), 1e-300)
  if float(np.min(eigenvalues)) < -1e-6 * scale:
    raise ValueError(f"`{name}` is not a covariance matrix: it has the negative eigenvalue "
                     f"{float(np.min(eigenvalues)):.3g}")


def _trace_sqrt_product(sigma1, sigma2):
  """Tr((sigma1 sigma2)^(1/2)) by symmetric eigen-decompositions.

  sigma1 sigma2 is similar to the PSD matrix s sigma2 s with s = sigma1^(1/2),
  so the trace is the sum of the square roots of that matrix's eigenvalues.
  Two `eigh` calls on symmetric matrices take seconds at 2048 x 2048, where
  `scipy.linalg.sqrtm` of the non-symmetric product takes a minute or more;
  round-off makes tiny negative eigenvalues, clipped to 0 (the real part
  TTUR keeps of sqrtm's result).
  """
  values, vectors = scipy.linalg.eigh(sigma1)
  _check_positive_semidefinite(values, "sigma1")
  _check_positive_semidefinite(scipy.linalg.eigh(sigma2, eigvals_only=True), "sigma2")
  root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
  product = root @ sigma2 @ root
  product = (product + product.T) / 2.0
  eigenvalues = scipy.linalg.eigh(product, eigvals_only=True)
  return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """Frechet distance between two Gaussians, as TTUR's `calculate_frechet_distance`.

  d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

  Args:
    mu1: Mean of the first set, shape `(dim,)`.
    sigma1: Covariance of the first set, shape `(dim, dim)`.
    mu2: Mean of the second set, shape `(dim,)`.
    sigma2: Covariance of the second set, shape `(dim, dim)`.
    eps: Offset added to both diagonals when the trace of the product's square
      root is not finite.

  Returns:
    The squared Frechet distance as a Python float.

  Raises:
    ValueError: If the shapes disagree, or a sigma is not positive semidefinite.

  Reference:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
    Nash Equilibrium", NeurIPS 2017, section "Frechet Inception Distance".
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  dim = mu1.shape[0]
  if mu1.shape != (dim,) or mu2.shape != (dim,):
    raise ValueError(f"`mu1` and `mu2` must be vectors of one length. Received: shapes "
                     f"{mu1.shape} and {mu2.shape}")
  if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
    raise ValueError(f"`sigma1` and `sigma2` must have shape ({dim}, {dim}). Received: "
                     f"shapes {sigma1.shape} and {sigma2.shape}")
  trace_covmean = _trace_sqrt_product(sigma1, sigma2)
  if not np.isfinite(trace_covmean):
    offset = np.eye(dim) * eps
    trace_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def fid_from_features(features1, features2):
  """Frechet distance between the Gaussian fits of two feature sets.

  Args:
    features1: Array of shape `(num_samples1, dim)`.
    features2: Array of shape `(num_samples2, dim)`.

  Returns:
    The FID as a Python float.

  Raises:
    ValueError: As `compute_statistics` and `frechet_distance`.
  """
  return frechet_distance(*compute_statistics(features1), *compute_statistics(features2))


def save_statistics(path, mu, sigma, **meta):
  """Saves FID statistics as `.npz` (TTUR's layout: arrays `mu` and `sigma`).

  Args:
    path: Output file; numpy appends `.npz` when missing.
    mu: Mean, shape `(dim,)`.
    sigma: Covariance, shape `(dim, dim)`.
    **meta: Scalars or strings describing the statistics (data set, split, number of
      images, weight file...), stored as extra arrays.

  Raises:
    ValueError: If a shape is wrong.
  """
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0],) * 2:
    raise ValueError(f"Expected mu (dim,) and sigma (dim, dim). Received: shapes {mu.shape} "
                     f"and {sigma.shape}")
  np.savez(path, mu=mu, sigma=sigma, **{k: np.asarray(v) for k, v in meta.items()})


def load_statistics(path):
  """Loads statistics written by `save_statistics` (or TTUR's `.npz` files).

  Args:
    path: An `.npz` file with arrays `mu` and `sigma`.

  Returns:
    Tuple `(mu, sigma, meta)`: float64 arrays and a dict of the other entries as Python
    scalars or strings.

  Raises:
    ValueError: If `mu` or `sigma` is missing.
  """
  with np.load(path, allow_pickle=False) as data:
    missing = [key for key in _ARRAY_KEYS if key not in data.files]
    if missing:
      raise ValueError(f"{path} has no {missing} arrays, so it holds no FID statistics.")
    meta = {key: data[key].item() if data[key].ndim == 0 else data[key]
            for key in data.files if key not in _ARRAY_KEYS}
    return data["mu"].astype(np.float64), data["sigma"].astype(np.float64), meta
