"""Inception Score (Salimans et al., 2016) from Inception logits, in float64 numpy."""

import numpy as np
import scipy.special


def inception_score(logits, splits=10):
  """Computes the Inception Score exp(E_x KL(p(y|x) || p(y))) over `splits` splits.

  Follows OpenAI's improved-gan code: the softmax runs over all columns (the 2015-12-05
  graph has 1008 logits, 1000 ImageNet classes plus 8 unused ones), the samples are cut
  into `splits` consecutive parts, and p(y) is the mean prediction within each part.
  Log-probabilities come from a log-softmax, so saturated logits give no NaN.

  Args:
    logits: Array of shape `(num_samples, num_classes)`.
    splits: Number of consecutive parts; the official SAGAN code used 1, OpenAI and
      most papers 10.

  Returns:
    Tuple `(mean, std)` of the per-split scores, Python floats.

  Raises:
    ValueError: If `logits` is not 2-D or `splits` is not in [1, num_samples].

  Reference:
    Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016, section 4.
  """
  logits = np.asarray(logits, dtype=np.float64)
  if logits.ndim != 2:
    raise ValueError(f"`logits` must have shape (num_samples, num_classes). Received: "
                     f"shape={logits.shape}")
  num_samples = logits.shape[0]
  if not 1 <= splits <= num_samples:
    raise ValueError(f"`splits` must be in [1, {num_samples}]. Received: splits={splits}")
  log_p = scipy.special.log_softmax(logits, axis=1)
  scores = []
  for i in range(splits):
    part = log_p[i * num_samples // splits:(i + 1) * num_samples // splits]
    log_p_y = scipy.special.logsumexp(part, axis=0) - np.log(part.shape[0])
    kl = np.sum(np.exp(part) * (part - log_p_y), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))
