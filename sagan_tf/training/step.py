"""The distributed GAN training step: D and G updates, run steps_per_loop times on the device."""

import keras
import tensorflow as tf

from sagan_tf import losses

METRIC_NAMES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_real", "d_fake")


def make_optimizers(config, mixed_precision="float32"):
  """Adam for G and D with the paper's two time-scale learning rates.

  Build them inside `strategy.scope()`. float16 wraps them in a dynamic
  loss-scale optimizer; bfloat16 needs none.
  """
  def adam(learning_rate, name):
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=config.beta_1,
                                      beta_2=config.beta_2, epsilon=config.epsilon, name=name)
    if mixed_precision == "float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{name}_loss_scale")
    return optimizer
  return adam(config.g_learning_rate, "g_adam"), adam(config.d_learning_rate, "d_adam")


def _dense(gradients):
  # Class tables get IndexedSlices from tf.gather; dense Adam equals TF1's
  # sparse Adam here (all rows of m and v decay, all rows update).
  return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]


class TrainStep(tf.Module):
  """Compiles the training loop of one experiment under a strategy.

  Per iteration: `d_steps` discriminator updates, each on a fresh real batch
  with fresh z and uniformly drawn fake labels, and one generator update with
  its own fresh z and labels; with `g_first` the generator update comes first
  (the official order). D sees real and fake images in one call on their
  concatenation, so both halves use the same spectral-norm vector u and u is
  written once, as in the official graph. In the G update D runs in
  inference mode: D has no batch norm, so the forward is unchanged, and u is
  not written, as the official graph's 'NO_OPS' fake pass. Per-replica losses
  are divided by the replica count because gradients are summed across
  replicas.

  Args:
    generator, discriminator: built models (in `strategy.scope()`).
    g_optimizer, d_optimizer: from `make_optimizers`.
    strategy: the tf.distribute strategy the models live in.
    train_config: a `TrainConfig`.
    z_dim, num_classes: the generator's noise length and classes.
    rng: a `tf.random.Generator` created in the strategy's scope.
    step: int64 scalar variable counting generator updates.
    ema: a `WeightAverage` or None.
    jit_compile: compile the per-replica updates with XLA.
  """

  def __init__(self, generator, discriminator, g_optimizer, d_optimizer, strategy, train_config,
               rng, step, ema=None, jit_compile=False):
    super().__init__(name="train_step")
    self.generator = generator
    self.discriminator = discriminator
    self.g_optimizer = g_optimizer
    self.d_optimizer = d_optimizer
    self.strategy = strategy
    self.config = train_config
    self.rng = rng
    self.step = step
    self.ema = ema
    self.z_dim = generator.z_dim
    self.num_classes = generator.num_classes
    self.d_loss_fn, self.g_loss_fn = losses.get_losses(train_config.loss)
    self._d_update = tf.function(self._d_update_fn, jit_compile=jit_compile)
    self._g_update = tf.function(self._g_update_fn, jit_compile=jit_compile)
    self.loop = tf.function(self._loop_fn)

  def _sample_inputs(self, batch_size):
    z = self.rng.normal((batch_size, self.z_dim))
    if not self.num_classes:
      return z, None
    labels = self.rng.uniform((batch_size,), 0, self.num_classes, dtype=tf.int32)
    return z, labels

  def _scale(self, loss, optimizer):
    loss = loss / self.strategy.num_replicas_in_sync
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
      loss = optimizer.scale_loss(loss)
    return loss

  def _d_update_fn(self, images, labels):
    batch_size = tf.shape(images)[0]
    z, fake_labels = self._sample_inputs(batch_size)
    fake = self.generator(z, fake_labels, training=True)
    both = tf.concat([tf.cast(images, fake.dtype), fake], axis=0)
    both_labels = None if fake_labels is None else tf.concat(
        [tf.cast(labels, tf.int32), fake_labels], axis=0)
    variables = self.discriminator.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.discriminator(tf.stop_gradient(both), both_labels, training=True)
      real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
      loss, real_term, fake_term = self.d_loss_fn(real_logits, fake_logits)
      scaled = self._scale(loss, self.d_optimizer)
    gradients = _dense(tape.gradient(scaled, variables))
    self.d_optimizer.apply_gradients(zip(gradients, variables))
    return {"d_loss": loss, "d_loss_real": real_term, "d_loss_fake": fake_term,
            "d_real": tf.reduce_mean(real_logits), "d_fake": tf.reduce_mean(fake_logits)}

  def _g_update_fn(self, batch_size):
    z, fake_labels = self._sample_inputs(batch_size)
    variables = self.generator.trainable_variables
    with tf.GradientTape() as tape:
      fake = self.generator(z, fake_labels, training=True)
      logits = self.discriminator(fake, fake_labels, training=False)
      loss = self.g_loss_fn(logits)
      scaled = self._scale(loss, self.g_optimizer)
    gradients = _dense(tape.gradient(scaled, variables))
    self.g_optimizer.apply_gradients(zip(gradients, variables))
    return {"g_loss": loss}

  def _mean(self, per_replica):
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()}

  def _iteration(self, iterator, per_replica_batch):
    def d_updates():
      metrics = None
      for _ in range(self.config.d_steps):
        images, labels = next(iterator)
        metrics = self._mean(self.strategy.run(self._d_update, args=(images, labels)))
      return metrics

    def g_update():
      return self._mean(self.strategy.run(self._g_update, args=(per_replica_batch,)))

    if self.config.g_first:
      g_metrics = g_update()
      d_metrics = d_updates()
    else:
      d_metrics = d_updates()
      g_metrics = g_update()
    self.step.assign_add(1)
    if self.ema is not None:
      self.ema.update(self.step)
    return {**d_metrics, **g_metrics}

  def _loop_fn(self, iterator, num_steps, per_replica_batch):
    """Runs `num_steps` iterations; returns metrics averaged over them and a finiteness flag."""
    totals = {name: tf.constant(0.0) for name in METRIC_NAMES}
    for _ in tf.range(num_steps):
      metrics = self._iteration(iterator, per_replica_batch)
      totals = {name: totals[name] + tf.cast(metrics[name], tf.float32) for name in METRIC_NAMES}
    count = tf.cast(tf.maximum(num_steps, 1), tf.float32)
    averages = {name: value / count for name, value in totals.items()}
    averages["finite"] = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(v)) for v in averages.values()] +
        [tf.reduce_all(tf.math.is_finite(v)) for v in
         self.generator.trainable_variables + self.discriminator.trainable_variables])
    return averages
