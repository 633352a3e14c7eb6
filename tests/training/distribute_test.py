"""Strategies built by name: one MirroredStrategy per device set in a process.

Two MirroredStrategy objects over the same devices number their collectives
from the same key, and the runtime fails the second one's collective with
"Shape mismatch in the collective instance" when the shapes differ (seen in CI
when a Trainer's strategy and the session's strategy shared a pytest worker).
"""

import numpy as np
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.training import distribute


def all_reduced(strategy, size):
  """Sums a vector of ones over the replicas inside a tf.function, as the step does."""
  @tf.function
  def reduce():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.ones([size])))
  return [value.numpy() for value in strategy.experimental_local_results(reduce())]


def test_every_name_of_the_two_cpus_gives_the_session_strategy(mirrored_strategy):
  by_runtime = distribute.make_strategy(configs.RuntimeConfig(strategy="mirrored"))
  by_long_names = distribute.mirrored_strategy(
      [device.name for device in tf.config.list_logical_devices("CPU")])
  by_lower_case = distribute.mirrored_strategy(["/cpu:0", "/cpu:1"])
  assert by_runtime is by_long_names is by_lower_case is mirrored_strategy


def test_collectives_of_different_shapes_through_two_lookups(mirrored_strategy):
  # The shape of the first collective differs from the one a fresh strategy
  # would give the same key: with two strategies the second call fails.
  first = all_reduced(mirrored_strategy, 3)
  second = all_reduced(distribute.make_strategy(configs.RuntimeConfig(strategy="mirrored")), 5)
  for values, size in ((first, 3), (second, 5)):
    assert len(values) == 2
    for value in values:
      np.testing.assert_array_equal(value, np.full([size], 2.0))


def test_other_device_sets_get_their_own_strategy(mirrored_strategy):
  one_cpu = distribute.mirrored_strategy(["CPU:0"])
  assert one_cpu is not mirrored_strategy
  assert one_cpu.num_replicas_in_sync == 1
