"""Class-conditional batch normalisation: per-class gamma and beta gathered by integer label."""

import keras
from keras import ops
import tensorflow as tf

# The allowed values are the config field's (model.class_gain).
from sagan_tf.configs.experiment import CLASS_GAINS


def _cross_replica_moments(x, axes):
  """Mean and biased variance over `axes` and over every replica in sync.

  Uses tf.distribute directly: Keras has no backend-neutral all-reduce. Sums
  of x and x^2 with the element count make unequal replica batches exact.
  """
  context = tf.distribute.get_replica_context()
  count = ops.cast(ops.prod(ops.take(ops.shape(x), axes)), "float32")
  total = ops.sum(x, axis=axes)
  total_sq = ops.sum(ops.square(x), axis=axes)
  if context is not None and context.num_replicas_in_sync > 1:
    total, total_sq, count = context.all_reduce(
        tf.distribute.ReduceOp.SUM, [total, total_sq, count])
  mean = total / count
  variance = ops.maximum(total_sq / count - ops.square(mean), 0.0)
  return mean, variance, count


@keras.saving.register_keras_serializable(package="sagan_tf")
class ConditionalBatchNormalization(keras.layers.Layer):
  """Batch norm whose scale and offset are rows of per-class tables.

  y = (x - mean) / sqrt(var + eps) * gamma[label] + beta[label]. Tables start
  at gamma = 1, beta = 0 (official `ops.ConditionalBatchNorm`: no linear map
  from a one-hot, no embedding). Training normalises with the batch's
  statistics (biased variance, over batch, height and width) and moves the
  moving statistics: m <- momentum * m + (1 - momentum) * batch, without
  debiasing; inference uses the moving statistics. With `num_classes=0` the
  layer is a plain batch norm with gamma and beta of shape [C].

  With `class_gain="one_plus_embedding"` (and classes) the scale is
  1 + gamma[label] and both tables start from `table_initializer`, as
  BigGAN-PyTorch's `ccbn` with embedding gains: classes differ from step 0.

  Args:
    num_classes: rows of the gamma/beta tables; 0 for unconditional.
    momentum: moving-average decay (official: 0.999 for CBN, 0.9999 for the
      generator's last batch norm).
    epsilon: added to the variance (official 1e-5).
    synchronized: compute batch statistics over all replicas (cross-replica
      batch norm, as on TPU); off, each replica uses its own batch.
    bessel_moving_variance: feed the moving variance the unbiased batch
      variance, as TF1's fused kernel does (official `g_bn`).
    class_gain: "official" (scale gamma[label], tables start at 1 and 0) or
      "one_plus_embedding" (scale 1 + gamma[label]); ignored without classes.
    table_initializer: initializer of both tables under
      "one_plus_embedding".

  Call arguments:
    inputs: (batch, height, width, channels) features.
    labels: int (batch,) class labels; ignored when num_classes is 0.
    training: batch statistics and moving-statistic updates when True.

  Returns:
    Normalised features, same shape and compute dtype as `inputs`.

  Reference:
    de Vries et al. 2017; Miyato & Koyama 2018; SAGAN Sec. 5.
  """

  def __init__(self, num_classes=0, momentum=0.999, epsilon=1e-5, synchronized=False,
               bessel_moving_variance=False, class_gain="official",
               table_initializer="glorot_uniform", **kwargs):
    # Statistics stay float32 under mixed precision.
    super().__init__(autocast=False, **kwargs)
    if int(num_classes) < 0:
      raise ValueError(f"`num_classes` must be >= 0, received num_classes={num_classes}")
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"`momentum` must be in [0, 1), received momentum={momentum}")
    if epsilon <= 0:
      raise ValueError(f"`epsilon` must be positive, received epsilon={epsilon}")
    if class_gain not in CLASS_GAINS:
      raise ValueError(f"`class_gain` must be one of {CLASS_GAINS}, received class_gain={class_gain!r}")
    self.num_classes = int(num_classes)
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    self.synchronized = bool(synchronized)
    self.bessel_moving_variance = bool(bessel_moving_variance)
    self.class_gain = class_gain
    self.table_initializer = keras.initializers.get(table_initializer)

  @property
  def one_plus_embedding(self):
    """Whether the scale is 1 + gamma[label] (only with classes)."""
    return bool(self.num_classes) and self.class_gain == "one_plus_embedding"

  def build(self, input_shape):
    channels = input_shape[-1]
    table_shape = (self.num_classes, channels) if self.num_classes else (channels,)
    # autocast=False: the layer's own autocast=False only clears an enclosing
    # autocast scope; a top-level mixed-precision call opens one regardless.
    gamma_init, beta_init = "ones", "zeros"
    if self.one_plus_embedding:
      gamma_init = beta_init = self.table_initializer
    self.gamma = self.add_weight(name="gamma", shape=table_shape, initializer=gamma_init,
                                 dtype="float32", autocast=False)
    self.beta = self.add_weight(name="beta", shape=table_shape, initializer=beta_init,
                                dtype="float32", autocast=False)
    # With `synchronized` every replica computes the same statistics, so the
    # moving averages are replica-local writes (no merge_call, no collective).
    # Otherwise they are averaged over replicas on write (MEAN: an all-reduce,
    # also inside XLA, never a merge_call there), so all copies stay equal.
    # See docs/distributed.md.
    aggregation = "none" if self.synchronized else "mean"
    self.moving_mean = self.add_weight(
        name="moving_mean", shape=(channels,), initializer="zeros", trainable=False,
        dtype="float32", autocast=False, aggregation=aggregation)
    self.moving_variance = self.add_weight(
        name="moving_variance", shape=(channels,), initializer="ones", trainable=False,
        dtype="float32", autocast=False, aggregation=aggregation)

  def call(self, inputs, labels=None, training=False):
    x = ops.cast(inputs, "float32")
    if training:
      if self.synchronized:
        mean, variance, count = _cross_replica_moments(x, [0, 1, 2])
      else:
        mean, variance = ops.moments(x, axes=[0, 1, 2])
        count = ops.cast(ops.prod(ops.shape(x)[:3]), "float32")
      moving_variance_target = variance
      if self.bessel_moving_variance:
        moving_variance_target = variance * count / ops.maximum(count - 1.0, 1.0)
      decay = self.momentum
      self.moving_mean.assign(self.moving_mean * decay + ops.stop_gradient(mean) * (1.0 - decay))
      self.moving_variance.assign(
          self.moving_variance * decay + ops.stop_gradient(moving_variance_target) * (1.0 - decay))
    else:
      mean, variance = self.moving_mean, self.moving_variance
    if self.num_classes:
      if labels is None:
        raise ValueError(f"{self.name}: a conditional batch norm needs `labels`")
      labels = ops.cast(labels, "int32")
      gamma = ops.take(self.gamma, labels, axis=0)[:, None, None, :]
      beta = ops.take(self.beta, labels, axis=0)[:, None, None, :]
      if self.one_plus_embedding:
        gamma = 1.0 + gamma
    else:
      gamma, beta = self.gamma, self.beta
    # tf.nn.batch_normalization's arithmetic, as the official graph.
    inv = ops.rsqrt(variance + self.epsilon) * gamma
    outputs = x * inv + (beta - mean * inv)
    return ops.cast(outputs, self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "momentum": self.momentum,
        "epsilon": self.epsilon,
        "synchronized": self.synchronized,
        "bessel_moving_variance": self.bessel_moving_variance,
        "class_gain": self.class_gain,
        "table_initializer": keras.initializers.serialize(self.table_initializer),
    })
    return config
