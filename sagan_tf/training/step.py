"""The GAN training step: `steps_per_loop` iterations of D and G updates in one compiled call.

This is the one step of the project: train.py's Trainer, the official-parity
check (sagan_tf/official/parity.py) and bench/ all run this class.
"""

import tensorflow as tf

from sagan_tf import losses
from sagan_tf.configs.experiment import D_SN_UPDATES
from sagan_tf.training import diffaugment
from sagan_tf.training.optimizers import agree_on_overflow, dense_gradients, is_loss_scaled

METRIC_NAMES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_real", "d_fake")


class TrainStep(tf.Module):
  """Compiles the training loop of one experiment under a strategy.

  Per iteration, in ONE `strategy.run`: `d_steps` discriminator updates
  (Eq. 4 of the paper, hinge loss), each on a fresh real batch with fresh z
  and uniformly drawn fake labels, and one generator update (Eq. 5) with its
  own z and labels; with `g_first` the generator update comes first (the
  official order); then the step counter and the weight average. D sees real
  and fake images in one call on their concatenation, so both halves use the
  same spectral-norm vector u and u is written once, as in the official
  graph. With `train_config.diffaugment` every image D sees, real and
  fake, in both updates, is augmented first (see `diffaugment.augment`);
  the draws are a function of (`seed`, step, call), rows of one global
  batch. In the G update D runs in inference mode: D has no batch norm, so
  the forward is unchanged, and u is not written, as the official graph's
  'NO_OPS' fake pass; with `d_sn_update="both"` D runs with training=True
  there too and writes u again (BigGAN-PyTorch). Per-replica losses are
  divided by the replica count because gradients are summed across replicas.

  Metrics are summed per replica into an on-read variable inside the
  on-device loop and reduced across replicas once, when the chunk ends.
  Every variable the replica function writes is replica-local or written
  from identical values (docs/distributed.md), so the replica function
  compiles with XLA under any strategy.

  Args:
    generator, discriminator: built models (in `strategy.scope()`).
    g_optimizer, d_optimizer: from `optimizers.make_optimizers`.
    strategy: the tf.distribute strategy the models live in.
    train_config: a `TrainConfig`.
    rng: a `tf.random.Generator` created in the strategy's scope.
    step: int64 scalar variable counting generator updates.
    ema: a `WeightAverage` or None.
    jit_compile: compile the replica function (all updates of an iteration)
      with XLA.
    stop_flag: a boolean variable read before every iteration; once set,
      the chunk ends after the iteration in flight (SIGTERM, Ctrl-C). None
      for multi-worker and TPU runs, whose workers must all run the chunk.
    noise_fn: callable(batch_size) -> (z, labels or None), run in replica
      context; None draws z ~ N(0, 1) and uniform labels from `rng`. A fixed
      noise_fn makes the step deterministic (official parity, tests).
    d_sn_update: "d_update" (D's u written in D's update only) or "both"
      (also in G's), see `ModelConfig.d_sn_update`.
    seed: seed of the DiffAugment draws (runtime.seed).
  """

  def __init__(self, generator, discriminator, g_optimizer, d_optimizer, strategy, train_config,
               rng, step, ema=None, jit_compile=False, stop_flag=None, noise_fn=None,
               d_sn_update="d_update", seed=0):
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
    self.stop_flag = stop_flag
    self.z_dim = generator.z_dim
    self.num_classes = generator.num_classes
    self._noise_fn = noise_fn or self._random_noise
    if d_sn_update not in D_SN_UPDATES:
      raise ValueError(f"`d_sn_update` must be one of {D_SN_UPDATES}, received {d_sn_update!r}")
    self._d_training_in_g_update = d_sn_update == "both"
    self._augment_seed = int(seed)
    self.d_loss_fn, self.g_loss_fn = losses.get_losses(train_config.loss)
    with strategy.scope():
      # Summed per replica without communication; the MEAN over replicas is
      # computed when the loop function reads it, once per chunk.
      self.metric_sums = tf.Variable(
          tf.zeros([len(METRIC_NAMES)]), trainable=False, name="metric_sums",
          synchronization=tf.VariableSynchronization.ON_READ,
          aggregation=tf.VariableAggregation.MEAN)
    # Grappler's arithmetic optimizer changes what one graph holding the G
    # update and then the D update computes (1.4e-3 on the weights against
    # the same replica function run eagerly; the D-first order and either
    # update alone match to 2e-6). Off, the graph equals the eager step
    # exactly. TF has no per-function switch, so this is process-wide.
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    # Both functions are written in TF control flow (the Python loops are over
    # static structure), so AutoGraph's source rewriting, ~1 s per process, is off.
    self.replica_fn = tf.function(self._replica_iteration, jit_compile=jit_compile,
                                  autograph=False)
    self.loop = tf.function(self._loop_fn, autograph=False)

  def _random_noise(self, batch_size):
    z = self.rng.normal((batch_size, self.z_dim))
    if not self.num_classes:
      return z, None
    labels = self.rng.uniform((batch_size,), 0, self.num_classes, dtype=tf.int32)
    return z, labels

  def _scale(self, loss, optimizer):
    """The loss to differentiate (inside the tape): per replica, times the float16 loss scale."""
    loss = loss / self.strategy.num_replicas_in_sync
    if is_loss_scaled(optimizer):
      loss = optimizer.scale_loss(loss)
    return loss

  def _apply(self, optimizer, tape, scaled_loss, variables):
    """Differentiates and applies; the optimizer all-reduces the gradients."""
    gradients = dense_gradients(tape.gradient(scaled_loss, variables))
    if is_loss_scaled(optimizer):
      gradients = agree_on_overflow(gradients)
    optimizer.apply_gradients(zip(gradients, variables))

  def _augment(self, images, call):
    """DiffAugment of this replica's rows of the global batch; `call` numbers the D inputs of a step."""
    if not self.config.diffaugment:
      return images
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    batch_size = tf.shape(images)[0]
    seed = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(self._augment_seed, tf.int64), self.step.read_value()]), call)
    return diffaugment.augment(images, self.config.diffaugment, seed,
                               offset=tf.cast(replica, tf.int32) * batch_size,
                               total=batch_size * self.strategy.num_replicas_in_sync)

  def _d_update(self, images, labels, index=0):
    batch_size = tf.shape(images)[0]
    z, fake_labels = self._noise_fn(batch_size)
    fake = self.generator(z, fake_labels, training=True)
    # Calls 2 index and 2 index + 1 of the step; the G update's is 2 d_steps.
    both = tf.concat([self._augment(tf.cast(images, fake.dtype), 2 * index),
                      self._augment(fake, 2 * index + 1)], axis=0)
    both_labels = None if fake_labels is None else tf.concat(
        [tf.cast(labels, tf.int32), tf.cast(fake_labels, tf.int32)], axis=0)
    with tf.GradientTape() as tape:
      logits = self.discriminator(tf.stop_gradient(both), both_labels, training=True)
      real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
      loss, real_term, fake_term = self.d_loss_fn(real_logits, fake_logits)
      scaled = self._scale(loss, self.d_optimizer)
    self._apply(self.d_optimizer, tape, scaled, self.discriminator.trainable_variables)
    return {"d_loss": loss, "d_loss_real": real_term, "d_loss_fake": fake_term,
            "d_real": tf.reduce_mean(real_logits), "d_fake": tf.reduce_mean(fake_logits)}

  def _g_update(self, batch_size):
    z, fake_labels = self._noise_fn(batch_size)
    fake_labels = None if fake_labels is None else tf.cast(fake_labels, tf.int32)
    with tf.GradientTape() as tape:
      fake = self.generator(z, fake_labels, training=True)
      fake = self._augment(fake, 2 * self.config.d_steps)
      logits = self.discriminator(fake, fake_labels, training=self._d_training_in_g_update)
      loss = self.g_loss_fn(logits)
      scaled = self._scale(loss, self.g_optimizer)
    self._apply(self.g_optimizer, tape, scaled, self.generator.trainable_variables)
    return {"g_loss": loss}

  def _replica_iteration(self, real_batches):
    """One iteration on this replica: the D updates and the G update in order, step, EMA, metrics."""
    metrics = {}

    # Name scopes let profiles (bench/) attribute ops to the two updates.
    def d_updates():
      for index, (images, labels) in enumerate(real_batches):
        with tf.name_scope("d_update"):
          metrics.update(self._d_update(images, labels, index))

    def g_update():
      with tf.name_scope("g_update"):
        metrics.update(self._g_update(tf.shape(real_batches[0][0])[0]))

    for update in (g_update, d_updates) if self.config.g_first else (d_updates, g_update):
      update()
    # A replica-local write (aggregation NONE): every replica counts alike.
    self.step.assign_add(1)
    if self.ema is not None:
      self.ema.update(self.step)
    self.metric_sums.assign_add(tf.stack([tf.cast(metrics[name], tf.float32)
                                          for name in METRIC_NAMES]))

  def _stop_requested(self):
    return self.stop_flag.read_value() if self.stop_flag is not None else tf.constant(False)

  def _loop_fn(self, iterator, num_steps):
    """Runs up to `num_steps` iterations; returns their mean metrics, `finite` and `steps` run.

    The loop is a tf.while_loop in the runtime: one Python dispatch per
    chunk, one `strategy.run` per iteration, one cross-replica reduction
    (of `metric_sums`) per chunk.
    """
    self.metric_sums.assign(tf.zeros([len(METRIC_NAMES)]), read_value=False)

    def keep_going(count):
      return tf.logical_and(count < num_steps, tf.logical_not(self._stop_requested()))

    def iteration(count):
      real_batches = tuple(next(iterator) for _ in range(self.config.d_steps))
      self.strategy.run(self.replica_fn, args=(real_batches,))
      return count + 1

    count = tf.while_loop(keep_going, iteration, [tf.constant(0, tf.int32)])[0]
    sums = self.metric_sums.read_value()
    means = sums / tf.cast(tf.maximum(count, 1), tf.float32)
    averages = {name: means[index] for index, name in enumerate(METRIC_NAMES)}
    averages["finite"] = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(means))] +
        [tf.reduce_all(tf.math.is_finite(v)) for v in
         self.generator.trainable_variables + self.discriminator.trainable_variables])
    averages["steps"] = count
    return averages
