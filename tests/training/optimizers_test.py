"""FusedAdam: the fused kernel against Adam written out in NumPy, on one device, XLA and two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.configs import OptimizerConfig
from sagan_tf.training.optimizers import FusedAdam, make_optimizers, replica_local_variables

LEARNING_RATE, BETA_1, BETA_2, EPSILON = 4e-4, 0.0, 0.999, 1e-8
STEPS = 3


def numpy_adam(weights, gradients, beta_1=BETA_1):
  """Kingma & Ba's Algorithm 1, epsilon outside the bias correction, in float64.

  As TF1's kernel (and the official code), 1 - beta and beta^t are rounded to
  float32: float32(1) - float32(0.999) is 0.999987e-3, 1.3e-5 below 1e-3.
  Keras' Adam forms 1 - beta in Python floats instead.
  """
  f32 = np.float32
  w = weights.astype(np.float64)
  m, v = np.zeros_like(w), np.zeros_like(w)
  for t, g in enumerate(gradients, start=1):
    m = m + (g - m) * float(f32(1) - f32(beta_1))
    v = v + (g * g - v) * float(f32(1) - f32(BETA_2))
    beta_1_power, beta_2_power = float(f32(beta_1) ** t), float(f32(BETA_2) ** t)
    alpha = LEARNING_RATE * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    w = w - alpha * m / (np.sqrt(v) + EPSILON)
  return w, m, v


def problem(rng):
  weights = rng.normal(size=(5, 3)).astype(np.float32)
  gradients = [rng.normal(size=(5, 3)).astype(np.float32) * 10.0 ** -k for k in range(STEPS)]
  return weights, gradients


def run(optimizer_fn, weights, gradients, strategy=None, jit_compile=False):
  """Applies `gradients` in turn inside a tf.function.

  Returns:
    (w, m, v) as lists of each replica's copy, and the iteration count.
  """
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    variable = tf.Variable(weights)
    with replica_local_variables():
      optimizer = optimizer_fn()
      optimizer.build([variable])

  @tf.function(jit_compile=jit_compile)
  def apply(gradient):
    # Each replica's share: the optimizer sums the replicas' gradients.
    optimizer.apply_gradients([(gradient / strategy.num_replicas_in_sync, variable)])

  for gradient in gradients:
    strategy.run(apply, args=(tf.constant(gradient),))

  def copies(x):
    x = x.value if isinstance(x, keras.Variable) else x
    return [np.asarray(c) for c in strategy.experimental_local_results(x)]

  # pylint: disable=protected-access
  state = [copies(x) for x in (variable, optimizer._momentums[0], optimizer._velocities[0])]
  return state, int(optimizer.iterations.numpy())


def fused(beta_1=BETA_1):
  return FusedAdam(LEARNING_RATE, beta_1=beta_1, beta_2=BETA_2, epsilon=EPSILON)


@pytest.mark.parametrize("beta_1", [BETA_1, 0.5])
def test_fused_adam_follows_the_adam_equations(rng, beta_1):
  weights, gradients = problem(rng)
  ((w,), (m,), (v,)), iterations = run(lambda: fused(beta_1), weights, gradients)
  expected_w, expected_m, expected_v = numpy_adam(weights, gradients, beta_1)
  assert iterations == STEPS
  # m passes through values near the first gradient (~1), where float32's ulp is 1.2e-7.
  np.testing.assert_allclose(m, expected_m, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(v, expected_v, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(w, expected_w, rtol=0, atol=1e-6)
  # The updates moved the weights by ~1e-3, a thousand times the tolerance.
  assert np.abs(w - weights).max() > 1e-3


def test_fused_adam_differs_from_keras_adam_only_by_the_rounding_of_one_minus_beta(rng):
  weights, gradients = problem(rng)
  keras_adam = lambda: keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1, beta_2=BETA_2,
                                             epsilon=EPSILON)
  (ours, _), (theirs, _) = run(fused, weights, gradients), run(keras_adam, weights, gradients)
  (w, m, v), (keras_w, keras_m, keras_v) = ([x[0] for x in ours], [x[0] for x in theirs])
  np.testing.assert_array_equal(m, keras_m)  # beta_1 = 0: m is the last gradient.
  # v's increments are (1 - beta_2) = 0.999987e-3 (float32) against 1e-3.
  np.testing.assert_allclose(v, keras_v * (1 - 1.2874e-5), rtol=2e-7)
  # Within two float32 ulps of weights up to 3 in magnitude.
  np.testing.assert_allclose(w, keras_w, rtol=0, atol=5e-7)


def test_fused_adam_under_xla_equals_the_plain_graph(rng):
  weights, gradients = problem(rng)
  xla, plain = run(fused, weights, gradients, jit_compile=True), run(fused, weights, gradients)
  for a, b in zip(xla[0], plain[0]):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-9)
  assert xla[1] == plain[1] == STEPS


def test_fused_adam_on_two_replicas_equals_one_device_in_every_copy(rng, mirrored_strategy):
  weights, gradients = problem(rng)
  (two, _), (one, _) = (run(fused, weights, gradients, strategy=mirrored_strategy),
                        run(fused, weights, gradients))
  for replicated, single in zip(two, one):
    assert len(replicated) == 2
    np.testing.assert_array_equal(replicated[0], replicated[1])
    np.testing.assert_allclose(replicated[0], single[0], rtol=1e-6, atol=1e-9)


def test_make_optimizers_builds_fused_adam_also_under_loss_scaling():
  g_adam, d_adam = make_optimizers(OptimizerConfig())
  assert isinstance(g_adam, FusedAdam) and isinstance(d_adam, FusedAdam)
  g_scaled, _ = make_optimizers(OptimizerConfig(), mixed_precision="float16")
  assert isinstance(g_scaled.inner_optimizer, FusedAdam)
