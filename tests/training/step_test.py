"""Tests of TrainStep as train.py builds it: Mirrored equals one device (with DiffAugment), update
order, d_steps, step counter, tracing, EMA, XLA, replica-local state and float16 overflow."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.configs.experiment import DIFFAUGMENT_TRANSFORMS
from sagan_tf.models.build import build_from_config
from sagan_tf.training.components import build_components

BATCH = 4
Z_DIM = 16
NUM_CLASSES = 3
# Cross-replica batch norm makes G's forward on two replicas equal to one
# device's on the whole batch; on one device it is plain batch norm.
MODEL = configs.ModelConfig(image_size=32, num_classes=NUM_CLASSES, g_width=8, d_width=8,
                            z_dim=Z_DIM, sync_batch_norm=True)
# Adam's first step is lr * g / (|g| + epsilon / sqrt(1 - beta_2)): with the
# default epsilon it is lr * sign(g), and gradients that are zero up to
# rounding (biases in front of batch norm) flip by 2 lr between two exact
# computations. A large epsilon makes the step linear in small gradients, a
# large learning rate keeps the weights moving far beyond the tolerances.
OPTIMIZER = configs.OptimizerConfig(g_learning_rate=1e-2, d_learning_rate=1e-2, epsilon=1e-3)
ATOL, RTOL = 1e-5, 1e-4
# Every transform: each replica must take its own rows of the global batch's draws.
DIFFAUGMENT = ",".join(DIFFAUGMENT_TRANSFORMS)


def fixed_noise(z, labels):
  """A TrainStep noise_fn: replica r takes rows [r b, (r + 1) b) of the same global z and labels.

  The default noise comes from per-replica random streams, which differ
  between strategies; with this one, one device and two replicas see the
  same global batch.
  """
  z, labels = tf.constant(z), tf.constant(labels)

  def noise(batch_size):
    replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
    start = replica * tf.cast(batch_size, tf.int32)
    return z[start:start + batch_size], labels[start:start + batch_size]
  return noise


@pytest.fixture(scope="module")
def inputs():
  """Initial weights of G and D (constant-initialised ones perturbed), z, labels and a real batch."""
  rng = np.random.default_rng(7)
  keras.utils.set_random_seed(7)
  generator, discriminator = build_from_config(MODEL)
  initial = []
  for variable in generator.variables + discriminator.variables:
    value = variable.numpy()
    # Attention gamma starts at 0, batch-norm tables at 1 and 0, biases at 0:
    # perturbed, every weight reaches the loss and class rows differ.
    if variable.trainable and value.size and np.all(value == value.flat[0]):
      value = value + rng.normal(0.0, 0.2, value.shape).astype(np.float32)
    initial.append(value)
  return types.SimpleNamespace(
      initial=initial,
      z=rng.standard_normal((BATCH, Z_DIM)).astype(np.float32),
      labels=np.array([0, 1, 2, 1], np.int32),
      images=rng.uniform(-1.0, 1.0, (BATCH, 32, 32, 3)).astype(np.float32),
      real_labels=np.array([2, 0, 1, 0], np.int32))


def make_step(strategy, train_config, initial, z=None, labels=None, runtime=None):
  """The TrainStep train.py builds (`build_components`), with the `initial` weights."""
  config = configs.ExperimentConfig(model=MODEL, optimizer=OPTIMIZER, train=train_config,
                                    runtime=runtime or configs.RuntimeConfig())
  noise_fn = None if z is None else fixed_noise(z, labels)
  parts = build_components(config, strategy, noise_fn=noise_fn)
  with strategy.scope():
    for variable, value in zip(parts.generator.variables + parts.discriminator.variables, initial):
      variable.assign(value)
    if parts.ema is not None:
      parts.ema.copy()
  return parts.train_step


def values(models):
  return [v.numpy() for model in models for v in model.variables]


def one_iteration(strategy, inputs, g_first, runtime=None, diffaugment=""):
  """Weights of G and D and the metrics after TrainStep.loop(num_steps=1) on the fixed batch."""
  train_config = configs.TrainConfig(batch_size=BATCH, g_first=g_first, diffaugment=diffaugment)
  train_step = make_step(strategy, train_config, inputs.initial, inputs.z, inputs.labels, runtime)
  # Mirrored splits each global batch of the dataset into one slice per replica.
  dataset = tf.data.Dataset.from_tensors((inputs.images, inputs.real_labels)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  metrics = train_step.loop(iterator, tf.constant(1))
  return types.SimpleNamespace(
      step=train_step,
      generator=values([train_step.generator]), discriminator=values([train_step.discriminator]),
      names=[v.path for v in train_step.generator.variables + train_step.discriminator.variables],
      trainable=[v.trainable for v in train_step.generator.variables] +
      [v.trainable for v in train_step.discriminator.variables],
      metrics={k: float(v) for k, v in metrics.items()})


@pytest.fixture(scope="module")
def one_device_d_first(inputs):
  return one_iteration(tf.distribute.OneDeviceStrategy("CPU:0"), inputs, g_first=False)


@pytest.fixture(scope="module")
def one_device_g_first(inputs):
  return one_iteration(tf.distribute.OneDeviceStrategy("CPU:0"), inputs, g_first=True)


def reference_iteration(inputs, g_first):
  """One iteration written from TrainStep's documented semantics, eagerly, without tf.distribute.

  D update: G(z) in training mode, D on [real; fake] in one call, hinge loss,
  Adam. G update: hinge loss of D in inference mode on G(z), Adam. Gradients
  of class tables are made dense, as in the official dense Adam.
  """
  generator, discriminator = build_from_config(MODEL)
  for variable, value in zip(generator.variables + discriminator.variables, inputs.initial):
    variable.assign(value)
  g_adam, d_adam = (keras.optimizers.Adam(learning_rate=lr, beta_1=OPTIMIZER.beta_1,
                                          beta_2=OPTIMIZER.beta_2, epsilon=OPTIMIZER.epsilon)
                    for lr in (OPTIMIZER.g_learning_rate, OPTIMIZER.d_learning_rate))
  z, labels = tf.constant(inputs.z), tf.constant(inputs.labels)

  def apply(adam, tape, loss, variables):
    gradients = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    adam.apply_gradients(zip(gradients, variables))

  def d_update():
    fake = generator(z, labels, training=True)
    with tf.GradientTape() as tape:
      logits = discriminator(tf.concat([inputs.images, fake], 0),
                             tf.concat([inputs.real_labels, labels], 0), training=True)
      loss = (tf.reduce_mean(tf.nn.relu(1.0 - logits[:BATCH])) +
              tf.reduce_mean(tf.nn.relu(1.0 + logits[BATCH:])))
    apply(d_adam, tape, loss, discriminator.trainable_variables)

  def g_update():
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(discriminator(generator(z, labels, training=True), labels,
                                           training=False))
    apply(g_adam, tape, loss, generator.trainable_variables)

  for update in ((g_update, d_update) if g_first else (d_update, g_update)):
    update()
  return types.SimpleNamespace(generator=values([generator]),
                               discriminator=values([discriminator]))


def assert_weights_close(actual, expected, names, atol=ATOL, rtol=RTOL):
  for name, a, e in zip(names, actual, expected):
    np.testing.assert_allclose(a, e, atol=atol, rtol=rtol, err_msg=name)


def max_change(after, before, trainable=None):
  """Largest absolute difference, over the trainable variables when a mask is given."""
  trainable = trainable or [True] * len(after)
  return max(float(np.abs(a - b).max()) for a, b, t in zip(after, before, trainable) if t)


@pytest.fixture(scope="module")
def one_device_augmented(inputs):
  return one_iteration(tf.distribute.OneDeviceStrategy("CPU:0"), inputs, g_first=False,
                       diffaugment=DIFFAUGMENT)


@pytest.fixture(scope="module")
def mirrored_augmented(inputs, mirrored_strategy):
  return one_iteration(mirrored_strategy, inputs, g_first=False, diffaugment=DIFFAUGMENT)


def test_mirrored_step_equals_one_device_step(inputs, one_device_d_first, one_device_augmented,
                                              mirrored_augmented):
  # With DiffAugment on: its draws are made for the global batch and each
  # replica augments its own rows, so two replicas must still equal one device.
  mirrored = mirrored_augmented
  one = one_device_augmented
  n_g = len(one.generator)
  # The comparison means something only if the step moved the trainable
  # weights (not only u and sigma) far beyond the tolerance, and the
  # augmentation changed the step as far.
  assert max_change(one.generator, inputs.initial[:n_g], one.trainable[:n_g]) > 100 * ATOL
  assert max_change(one.discriminator, inputs.initial[n_g:], one.trainable[n_g:]) > 100 * ATOL
  assert max_change(one.generator + one.discriminator,
                    one_device_d_first.generator + one_device_d_first.discriminator) > 100 * ATOL
  # All variables: weights, batch-norm moving statistics, spectral-norm u and sigma.
  assert_weights_close(mirrored.generator + mirrored.discriminator,
                       one.generator + one.discriminator, one.names)
  for name, value in one.metrics.items():
    assert mirrored.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("g_first", [False, True])
def test_step_follows_the_documented_update_order(inputs, one_device_d_first, one_device_g_first,
                                                  g_first):
  result = one_device_g_first if g_first else one_device_d_first
  expected = reference_iteration(inputs, g_first)
  assert_weights_close(result.generator + result.discriminator,
                       expected.generator + expected.discriminator, result.names)


def test_g_first_changes_the_result(one_device_d_first, one_device_g_first):
  # With D first, G's update sees the updated D (and D's fake pass moved G's
  # spectral-norm u); with G first, D sees the updated G's images.
  n_g = len(one_device_d_first.generator)
  trainable = one_device_d_first.trainable
  assert max_change(one_device_g_first.generator, one_device_d_first.generator,
                    trainable[:n_g]) > 100 * ATOL
  assert max_change(one_device_g_first.discriminator, one_device_d_first.discriminator,
                    trainable[n_g:]) > 100 * ATOL


EMA_DECAY = 0.5
EMA_START = 2
SINGLE_STEPS = 3


def indexed_batch(index):
  """Batch number `index`: images filled with index / 1000, so consumption can be counted."""
  value = tf.cast(index, tf.float32) / 1000.0
  return (tf.fill([BATCH, 32, 32, 3], value),
          tf.cast(tf.fill([BATCH], index % NUM_CLASSES), tf.int32))


@pytest.fixture(scope="module")
def long_run(inputs):
  """d_steps=2 with EMA: SINGLE_STEPS calls of loop(num_steps=1), then one of num_steps=2.

  One compiled loop serves the counter, tracing, data and EMA tests, since
  every trace of the step costs seconds of CPU.
  """
  strategy = tf.distribute.OneDeviceStrategy("CPU:0")
  train_config = configs.TrainConfig(batch_size=BATCH, d_steps=2, ema_decay=EMA_DECAY,
                                     ema_start_step=EMA_START)
  train_step = make_step(strategy, train_config, inputs.initial)
  dataset = tf.data.Dataset.range(1_000_000).map(indexed_batch)
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  generator = train_step.generator
  history = [[v.numpy() for v in generator.trainable_variables]]
  steps = []
  for _ in range(SINGLE_STEPS):
    train_step.loop(iterator, tf.constant(1))
    history.append([v.numpy() for v in generator.trainable_variables])
    steps.append(int(train_step.step.numpy()))
  average = train_step.ema.average
  result = types.SimpleNamespace(
      history=history, steps=steps,
      ema=[v.numpy() for v in average.trainable_variables],
      ema_state=[v.numpy() for v in average.non_trainable_variables],
      source_state=[v.numpy() for v in generator.non_trainable_variables],
      traces_after_first=train_step.loop.experimental_get_tracing_count())
  train_step.loop(iterator, tf.constant(2))
  result.final_step = int(train_step.step.numpy())
  result.traces = train_step.loop.experimental_get_tracing_count()
  result.g_updates = int(train_step.g_optimizer.iterations.numpy())
  result.d_updates = int(train_step.d_optimizer.iterations.numpy())
  images, _ = next(iterator)
  result.next_batch = int(round(float(images.numpy().flat[0]) * 1000.0))
  return result


def test_step_counter_advances_by_num_steps(long_run):
  assert long_run.steps == list(range(1, SINGLE_STEPS + 1))
  assert long_run.final_step == SINGLE_STEPS + 2


def test_another_num_steps_does_not_retrace(long_run):
  assert long_run.traces_after_first == 1
  assert long_run.traces == 1


def test_d_steps_consume_one_real_batch_per_d_update(long_run):
  iterations = SINGLE_STEPS + 2
  assert long_run.g_updates == iterations
  assert long_run.d_updates == 2 * iterations
  # Batches 0 .. 2 * iterations - 1 went into the D updates, in order.
  assert long_run.next_batch == 2 * iterations


def closed_form_average(history, decay, start_step):
  """sum_t (1 - d_t) prod_{u > t} d_u w_t, with d_t = 0 before `start_step` and for the initial copy."""
  decays = [0.0] + [0.0 if t < start_step else decay for t in range(1, len(history))]
  averages = []
  for index in range(len(history[0])):
    total = np.zeros(history[0][index].shape, np.float64)
    for t, weights in enumerate(history):
      total += (1.0 - decays[t]) * np.prod(decays[t + 1:]) * weights[index].astype(np.float64)
    averages.append(total)
  return averages


def test_ema_is_the_closed_form_average_of_the_recorded_weights(long_run):
  history = long_run.history
  # The weights moved at every step, so each term of the average matters.
  for before, after in zip(history, history[1:]):
    assert max_change(after, before) > 1e-3
  expected = closed_form_average(history, EMA_DECAY, EMA_START)
  for actual, wanted in zip(long_run.ema, expected):
    np.testing.assert_allclose(actual, wanted, atol=1e-6, rtol=1e-5)
  # Not simply the last weights, nor an average that ignores ema_start_step.
  assert max_change(long_run.ema, history[-1]) > 1e-3
  assert max_change(closed_form_average(history, EMA_DECAY, 0), expected) > 1e-4
  # Non-trainable state (moving statistics, spectral-norm u) is copied.
  for actual, wanted in zip(long_run.ema_state, long_run.source_state):
    np.testing.assert_array_equal(actual, wanted)


def test_replicas_hold_identical_copies_of_every_variable(mirrored_augmented):
  # u, sigma, BN statistics, optimizer counters and slots, the step counter are
  # written replica-locally (aggregation NONE): equal copies prove the writes agree,
  # also when the replicas augment their images with different draws.
  step = mirrored_augmented.step
  variables = (step.generator.variables + step.discriminator.variables +
               list(step.g_optimizer.variables) + list(step.d_optimizer.variables) + [step.step])
  local_kinds = 0
  for variable in variables:
    if isinstance(variable, keras.Variable):
      variable = variable.value  # The tf.Variable behind a Keras variable.
    copies = [c.numpy() for c in step.strategy.experimental_local_results(variable)]
    assert len(copies) == 2, variable.name
    np.testing.assert_array_equal(copies[0], copies[1], err_msg=variable.name)
    local_kinds += variable.aggregation == tf.VariableAggregation.NONE
  assert int(step.step.numpy()) == 1
  assert int(step.d_optimizer.iterations.numpy()) == 1
  assert local_kinds == len(variables)


def test_xla_replica_function_equals_the_plain_one(inputs, one_device_d_first):
  xla = one_iteration(tf.distribute.OneDeviceStrategy("CPU:0"), inputs, g_first=False,
                      runtime=configs.RuntimeConfig(jit_compile=True))
  assert xla.step.replica_fn.experimental_get_tracing_count() == 1
  one = one_device_d_first
  assert_weights_close(xla.generator + xla.discriminator, one.generator + one.discriminator,
                       one.names)
  for name, value in one.metrics.items():
    assert xla.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_float16_overflow_on_one_replica_is_skipped_by_every_replica(inputs, mirrored_strategy):
  # Replica 1's real images overflow float16 (65504): its D gradients are NaN,
  # replica 0's are finite. Keras' loss-scale optimizer alone would take
  # replica 0's verdict and apply the NaN-summed gradients everywhere.
  train_config = configs.TrainConfig(batch_size=BATCH, g_first=False)
  step = make_step(mirrored_strategy, train_config, inputs.initial, inputs.z, inputs.labels,
                   configs.RuntimeConfig(mixed_precision="float16"))
  images = inputs.images.copy()
  images[BATCH // 2:] = 1e5
  dataset = tf.data.Dataset.from_tensors((images, inputs.real_labels)).repeat()
  iterator = iter(mirrored_strategy.experimental_distribute_dataset(dataset))
  scale_before = float(step.d_optimizer.dynamic_scale.numpy())
  step.loop(iterator, tf.constant(1))
  n_g = len(step.generator.variables)
  for variable, initial in zip(step.discriminator.trainable_variables,
                               [v for v, var in zip(inputs.initial[n_g:],
                                                    step.discriminator.variables) if var.trainable]):
    for copy in mirrored_strategy.experimental_local_results(variable.value):
      np.testing.assert_array_equal(copy.numpy(), initial, err_msg=variable.path)
  scales = [float(c.numpy()) for c in
            mirrored_strategy.experimental_local_results(step.d_optimizer.dynamic_scale.value)]
  assert scales == [scale_before / 2] * 2
  counters = [int(c.numpy()) for c in mirrored_strategy.experimental_local_results(
      step.d_optimizer.inner_optimizer.iterations.value)]
  assert counters == [0, 0]
