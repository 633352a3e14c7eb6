"""Inspection of the traced chunk function: replica calls and collectives per iteration and per chunk.

The chunk function is what an accelerator runs: one `strategy.run` per
iteration means one replica program per iteration; every collective in the
loop body is paid at every iteration, one outside the loop once per chunk.
The collectives are counted under the multi-worker strategy's implementation
(CollectiveAllReduceStrategy) on the two local logical CPUs, whose
cross-device reductions are CollectiveReduceV2 ops in the graph (the
MirroredStrategy on CPUs reduces with plain copies and adds instead).
"""

import collections
import dataclasses

import pytest
import tensorflow as tf
from tensorflow.python.distribute import collective_all_reduce_strategy

from sagan_tf import configs
from sagan_tf.training.components import build_components

BATCH = 4
D_STEPS = 2
CONFIG = configs.ExperimentConfig(
    model=configs.ModelConfig(image_size=32, num_classes=3, g_width=8, d_width=8, z_dim=16),
    train=configs.TrainConfig(batch_size=BATCH, d_steps=D_STEPS, ema_decay=0.9))
COLLECTIVES = ("CollectiveReduceV2", "CollectiveGatherV2", "CollectiveBcastSendV2",
               "CollectiveAllToAllV2", "CollectiveReduce", "CollectiveGather", "CollectiveBcastSend",
               "NcclAllReduce")


def traced_loop(strategy, config=CONFIG):
  """The GraphDef of `TrainStep.loop` as train.py builds it, and its function library."""
  step = build_components(config, strategy).train_step

  def make(context):
    batch = context.get_per_replica_batch_size(config.train.batch_size)
    images = tf.zeros((batch, 32, 32, 3))
    return tf.data.Dataset.from_tensors((images, tf.zeros((batch,), tf.int32))).repeat()

  iterator = iter(strategy.distribute_datasets_from_function(make))
  graph = step.loop.get_concrete_function(iterator, tf.TensorSpec([], tf.int32)).graph
  graph_def = graph.as_graph_def()
  return graph_def, {f.signature.name: f for f in graph_def.library.function}


def op_counts(nodes, library):
  """Op types of `nodes` and, recursively, of every function they call."""
  counts = collections.Counter()
  for node in nodes:
    counts[node.op] += 1
    for key in ("f", "body", "cond", "then_branch", "else_branch"):
      if key in node.attr and node.attr[key].func.name in library:
        counts += op_counts(library[node.attr[key].func.name].node_def, library)
  return counts


def loop_body(graph_def, library):
  (loop,) = [n for n in graph_def.node if n.op in ("While", "StatelessWhile")]
  return library[loop.attr["body"].func.name].node_def


def collectives(counts):
  return sum(counts[name] for name in COLLECTIVES)


@pytest.fixture(scope="module")
def collective_strategy():
  if len(tf.config.list_logical_devices("CPU")) < 2:
    pytest.fail("conftest could not create two logical CPU devices")
  # pylint: disable=protected-access
  return collective_all_reduce_strategy.CollectiveAllReduceStrategy._from_local_devices(
      ["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="module")
def collective_graph(collective_strategy):
  return traced_loop(collective_strategy)


def test_one_replica_call_per_iteration(collective_graph):
  graph_def, library = collective_graph
  calls = [n.attr["f"].func.name for n in loop_body(graph_def, library)
           if n.op in ("StatefulPartitionedCall", "PartitionedCall")]
  # One call of the (cloned, all-replica) replica function: one strategy.run.
  assert len(calls) == 1, calls
  assert "replica_iteration" in calls[0]


def test_collectives_per_iteration_are_one_gradient_all_reduce_per_update(collective_graph):
  graph_def, library = collective_graph
  replicas = 2
  in_loop = collectives(op_counts(loop_body(graph_def, library), library))
  # D_STEPS D updates and one G update, each one batched gradient all-reduce
  # per replica; no metric reduction, no u / BN / counter / EMA traffic.
  assert in_loop == replicas * (D_STEPS + 1)
  everything = collectives(op_counts(graph_def.node, library))
  # Outside the loop: the metric sums, once per chunk.
  assert everything - in_loop == replicas


def test_float16_adds_one_scalar_overflow_vote_per_update(collective_strategy):
  config = dataclasses.replace(
      CONFIG, runtime=configs.RuntimeConfig(mixed_precision="float16"))
  graph_def, library = traced_loop(collective_strategy, config)
  in_loop = collectives(op_counts(loop_body(graph_def, library), library))
  assert in_loop == 2 * 2 * (D_STEPS + 1)


def test_mirrored_runs_one_replica_call_per_iteration(mirrored_strategy):
  graph_def, library = traced_loop(mirrored_strategy)
  calls = [n.attr["f"].func.name for n in loop_body(graph_def, library)
           if n.op in ("StatefulPartitionedCall", "PartitionedCall")]
  assert len(calls) == 1, calls
