"""Tests for the Inception Score."""

import math

import numpy as np
import pytest

from sagan_tf.metrics.inception_score import inception_score

_LOGITS = [[1.0, 2.0, 3.0, 4.0],
           [0.0, 0.0, 0.0, 0.0],
           [2.0, -1.0, 0.0, 1.0]]


def _hand_score(rows):
  probs = []
  for row in rows:
    exps = [math.exp(v) for v in row]
    probs.append([e / sum(exps) for e in exps])
  marginal = [sum(p[j] for p in probs) / len(probs) for j in range(len(rows[0]))]
  kls = [sum(p[j] * math.log(p[j] / marginal[j]) for j in range(len(p))) for p in probs]
  return math.exp(sum(kls) / len(kls))


def test_matches_hand_computation_single_split():
  mean, std = inception_score(_LOGITS, splits=1)
  assert mean == pytest.approx(_hand_score(_LOGITS), rel=1e-12)
  assert std == 0.0


def test_one_sample_splits_score_one():
  mean, std = inception_score(_LOGITS, splits=3)
  assert mean == pytest.approx(1.0)
  assert std == pytest.approx(0.0, abs=1e-12)


def test_splits_are_consecutive_parts():
  logits = np.concatenate([_LOGITS, np.array(_LOGITS)[::-1] * 2.0])
  mean, std = inception_score(logits, splits=2)
  parts = [_hand_score(logits[:3].tolist()), _hand_score(logits[3:].tolist())]
  assert mean == pytest.approx(np.mean(parts), rel=1e-12)
  assert std == pytest.approx(np.std(parts), rel=1e-9)


def test_confident_distinct_predictions_score_class_count():
  # Saturated logits underflow to probability 0; the log-softmax keeps this finite.
  mean, _ = inception_score(np.eye(4) * 1000.0, splits=1)
  assert mean == pytest.approx(4.0, rel=1e-12)


def test_bad_splits_raise():
  with pytest.raises(ValueError, match="splits"):
    inception_score(_LOGITS, splits=4)
