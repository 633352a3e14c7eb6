"""Inspection of the traced chunk function: replica calls and collectives per iteration and per chunk.

The chunk function is what an accelerator runs: one `strategy.run` per
iteration means one replica program per iteration; every collective in the
loop body is paid at every iteration, one outside the loop once per chunk.
The collectives are counted under the multi-worker strategy's implementation
(CollectiveAllReduceStrategy) on two local logical CPUs, with synchronised
batch norm (whose moving statistics are then replica-local), whose cross-device
reductions are CollectiveReduceV2 ops in the graph (MirroredStrategy on CPUs
reduces with plain copies and adds instead).

Run as a script (`python tests/training/step_graph_test.py STRATEGY DTYPE`)
this file traces `TrainStep.loop` as train.py builds it and prints the
counts as JSON; the tests run it in a subprocess, because a second
collective strategy in the pytest process would share collective keys with
the session's MirroredStrategy.
"""

import collections
import dataclasses
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 4
D_STEPS = 2
REPLICAS = 2
COLLECTIVES = ("CollectiveReduceV2", "CollectiveGatherV2", "CollectiveBcastSendV2",
               "CollectiveAllToAllV2", "CollectiveReduce", "CollectiveGather", "CollectiveBcastSend",
               "NcclAllReduce")


def _op_counts(nodes, library):
  """Op types of `nodes` and, recursively, of every function they call."""
  counts = collections.Counter()
  for node in nodes:
    counts[node.op] += 1
    for key in ("f", "body", "cond", "then_branch", "else_branch"):
      if key in node.attr and node.attr[key].func.name in library:
        counts += _op_counts(library[node.attr[key].func.name].node_def, library)
  return counts


def _probe(strategy_name, dtype):
  """Counts of the traced chunk function (run in a fresh process)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from tensorflow.python.distribute import collective_all_reduce_strategy  # pylint: disable=g-import-not-at-top
  from sagan_tf import configs  # pylint: disable=g-import-not-at-top
  from sagan_tf.training.components import build_components  # pylint: disable=g-import-not-at-top
  if strategy_name == "collective":
    # pylint: disable=protected-access
    strategy = collective_all_reduce_strategy.CollectiveAllReduceStrategy._from_local_devices(
        ["/cpu:0", "/cpu:1"])
  else:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  config = configs.ExperimentConfig(
      model=configs.ModelConfig(image_size=32, num_classes=3, g_width=8, d_width=8, z_dim=16,
                                sync_batch_norm=True),
      train=configs.TrainConfig(batch_size=BATCH, d_steps=D_STEPS, ema_decay=0.9),
      runtime=configs.RuntimeConfig(mixed_precision=dtype))
  step = build_components(config, strategy).train_step
  batch_norms = sum(v.path.endswith("moving_mean") for v in step.generator.variables)

  def make(context):
    batch = context.get_per_replica_batch_size(BATCH)
    images = tf.zeros((batch, 32, 32, 3))
    return tf.data.Dataset.from_tensors((images, tf.zeros((batch,), tf.int32))).repeat()

  iterator = iter(strategy.distribute_datasets_from_function(make))
  graph_def = step.loop.get_concrete_function(
      iterator, tf.TensorSpec([], tf.int32)).graph.as_graph_def()
  library = {f.signature.name: f for f in graph_def.library.function}
  (loop,) = [n for n in graph_def.node if n.op in ("While", "StatelessWhile")]
  body = library[loop.attr["body"].func.name].node_def
  in_loop = _op_counts(body, library)
  everything = _op_counts(graph_def.node, library)
  return {
      "replica_calls": [n.attr["f"].func.name for n in body
                        if n.op in ("StatefulPartitionedCall", "PartitionedCall")],
      "collectives_in_loop": sum(in_loop[name] for name in COLLECTIVES),
      "collectives_in_chunk": sum(everything[name] for name in COLLECTIVES),
      "batch_norms": batch_norms,
  }


def probe(strategy_name, dtype="float32"):
  from tests import launch  # pylint: disable=g-import-not-at-top  (this file also runs as a script)
  result = launch.run([sys.executable, os.path.abspath(__file__), strategy_name, dtype],
                      cwd=REPO, env=launch.child_env(), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def collective_float32():
  return probe("collective")


def test_one_replica_call_per_iteration(collective_float32):
  calls = collective_float32["replica_calls"]
  # One call of the (cloned, all-replica) replica function: one strategy.run.
  assert len(calls) == 1, calls
  assert "replica_iteration" in calls[0]


def test_collectives_are_one_gradient_all_reduce_per_update_and_one_metric_reduction(
    collective_float32):
  # D_STEPS D updates and one G update, each one batched gradient all-reduce
  # per replica; in each of their D_STEPS + 1 G forwards one all-reduce of the
  # batch moments per synchronised batch norm, and its gradient (another
  # all-reduce) in the G update's backward pass; no metric reduction, no u /
  # moving-statistics / counter / EMA traffic.
  updates, norms = D_STEPS + 1, collective_float32["batch_norms"]
  expected = REPLICAS * (updates + updates * norms + norms)
  assert collective_float32["batch_norms"] == 7  # 3 blocks x 2 CBN + the final BN at 32 px.
  assert collective_float32["collectives_in_loop"] == expected
  # Outside the loop: the metric sums, once per chunk.
  outside = collective_float32["collectives_in_chunk"] - collective_float32["collectives_in_loop"]
  assert outside == REPLICAS


def test_float16_adds_one_overflow_vote_per_update():
  counts = probe("collective", "float16")
  updates = D_STEPS + 1
  norms = counts["batch_norms"]
  assert counts["collectives_in_loop"] == REPLICAS * (2 * updates + updates * norms + norms)


def test_mirrored_runs_one_replica_call_per_iteration():
  calls = probe("mirrored")["replica_calls"]
  assert len(calls) == 1, calls


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  print(json.dumps(_probe(sys.argv[1], sys.argv[2])))
