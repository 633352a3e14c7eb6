"""Adam for G and D, with replica-local state so the whole update compiles with XLA on any strategy."""

import contextlib

import keras
import tensorflow as tf


@contextlib.contextmanager
def replica_local_variables():
  """Creates every variable in the block with `aggregation=NONE`: replica-context writes stay local.

  A replica-context write of a mirrored variable with `ONLY_FIRST_REPLICA`
  (Keras' optimizer iteration counter) or `MEAN` goes through `merge_call`
  or an all-reduce (TF's values.py, `_on_write_update_replica`), and
  `merge_call` is refused inside a `jit_compile=True` function on several
  GPUs. Use this block only for state that every replica computes
  identically from mirrored values: optimizer counters and slots (updated
  from all-reduced gradients), the weight average (from mirrored weights).
  Then a local write keeps the copies equal with no communication at all.
  See docs/distributed.md.
  """
  def creator(next_creator, **kwargs):
    kwargs["aggregation"] = tf.VariableAggregation.NONE
    return next_creator(**kwargs)

  with tf.variable_creator_scope(creator):
    yield


@keras.saving.register_keras_serializable(package="sagan_tf")
class FusedAdam(keras.optimizers.Adam):
  """Keras Adam whose per-variable update is one fused `ResourceApplyAdam` kernel.

  The kernel TF1's `tf.train.AdamOptimizer` runs in the official SAGAN code
  (Kingma & Ba 2015, Algorithm 1 with epsilon outside the bias correction),
  on Keras' state (`iterations`, m, v), so checkpoints are unchanged:

      alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
      m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
      w -= alpha * m / (sqrt(v) + epsilon)

  The kernel forms 1 - beta in the variable's dtype, as TF1 did: for
  beta_2 = 0.999 in float32 that is 0.999987e-3, where Keras' Adam, which
  forms it in Python floats, uses 1e-3 (v differs by 1.3e-5 relative,
  tests/training/optimizers_test.py). Keras writes the update as ~25 graph
  ops per variable; the one kernel makes the traced step ~12% smaller
  (tracing, grappler and executor set-up scale with it) and reads each
  tensor once. The kernel has CPU, GPU, TPU and XLA implementations.
  `amsgrad` falls back to Keras' ops.
  """

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad:
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    index = self._get_variable_index(variable)
    # The handles are this replica's (or this update's device's) components.
    tf.raw_ops.ResourceApplyAdam(
        var=_handle(variable), m=_handle(self._momentums[index]),
        v=_handle(self._velocities[index]),
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


def _handle(variable):
  """The resource handle of a Keras or TF variable."""
  if isinstance(variable, keras.Variable):
    variable = variable.value
  return variable.handle


def make_optimizers(config, mixed_precision="float32"):
  """Adam for G and D with the paper's two time-scale learning rates (TTUR, Sec. 4).

  Build them inside `strategy.scope()` and `replica_local_variables()`.
  float16 wraps them in a dynamic loss-scale optimizer; bfloat16 needs none.
  """
  def adam(learning_rate, name):
    optimizer = FusedAdam(learning_rate=learning_rate, beta_1=config.beta_1,
                          beta_2=config.beta_2, epsilon=config.epsilon, name=name)
    if mixed_precision == "float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{name}_loss_scale")
    return optimizer
  return adam(config.g_learning_rate, "g_adam"), adam(config.d_learning_rate, "d_adam")


def is_loss_scaled(optimizer):
  return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def dense_gradients(gradients):
  """IndexedSlices (class tables through tf.gather) as dense tensors.

  Dense Adam on these equals TF1's sparse Adam: it decays every row of m and
  v, adds the (duplicate-summed) batch rows and updates every row.
  """
  return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]


def agree_on_overflow(gradients):
  """Makes every replica's gradients non-finite when any replica's are (float16 loss scaling).

  Keras' LossScaleOptimizer checks the gradients it is given, which are each
  replica's own before its all-reduce, and under merge_call takes replica
  0's verdict for all: an overflow on replica 1 alone would be applied (and
  poison every weight), and without merge_call (XLA on GPUs) the replicas
  would disagree and wait in different collectives. One scalar all-reduce
  of the local verdicts, folded into the gradients, gives every replica the
  same verdict, so all skip the update and lower the scale together.
  """
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return gradients
  local = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
  overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local, tf.float32))
  poison = tf.where(overflowed > 0.0, float("nan"), 1.0)
  return [g if g is None else g * tf.cast(poison, g.dtype) for g in gradients]
