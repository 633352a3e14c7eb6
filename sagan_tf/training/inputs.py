"""The Trainer's input: per-replica batches, and in deterministic runs a checkpointed data position.

A distributed iterator cannot be checkpointed. Deterministic single-worker
runs read one plain tf.data iterator instead (`CheckpointableInput`), saved
with the checkpoint under a name (`data_key`) that changes with every setting
that changes the batches, so that a resumed run reads the batches the
uninterrupted run would have read.
"""

import hashlib
import json

import tensorflow as tf

from sagan_tf.training import run_dir
from sagan_tf.training.errors import TrainingError

DATA_ITERATOR = "data_iterator"


class CheckpointableInput:
  """Per-replica batches from one tf.data iterator, which, unlike a distributed one, checkpoints.

  Replica r of each round gets the r-th of the next `num_replicas` batches,
  as the distributed iterator of a single-worker strategy hands them out.
  """

  def __init__(self, strategy, dataset):
    self.strategy = strategy
    with tf.device("/cpu:0"):
      self.iterator = iter(dataset)

  def __next__(self):
    batches = [next(self.iterator) for _ in range(self.strategy.num_replicas_in_sync)]
    if len(batches) == 1:
      return batches[0]
    return self.strategy.experimental_distribute_values_from_function(
        lambda context: batches[context.replica_id_in_sync_group])


def make_input(strategy, make_dataset, batch_size, checkpointable):
  """The iterator the training loop reads: a `CheckpointableInput` or a distributed one.

  Args:
    strategy: the run's tf.distribute strategy.
    make_dataset: callable(input_context, per_replica_batch) -> tf.data.
    batch_size: the global batch size.
    checkpointable: whether the data position is checkpointed.
  """
  if checkpointable:
    replicas = strategy.num_replicas_in_sync
    dataset = make_dataset(tf.distribute.InputContext(num_replicas_in_sync=replicas),
                           batch_size // replicas)
    return CheckpointableInput(strategy, dataset)
  return iter(strategy.distribute_datasets_from_function(
      lambda context: make_dataset(context, context.get_per_replica_batch_size(batch_size))))


def data_key(config, num_replicas, per_replica_batch):
  """The checkpoint name of the data position: differs when the batches would differ."""
  settings = json.dumps([config.data.__dict__, config.runtime.seed, num_replicas,
                         per_replica_batch], sort_keys=True, default=str)
  return f"{DATA_ITERATOR}_{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def restore_data_position(iterator, key, path, log):
  """Restores the data position saved as `key` in checkpoint `path`, or logs why not.

  Raises:
    TrainingError: the checkpoint holds the position but it cannot be read.
  """
  try:
    names = [name for name, _ in tf.train.list_variables(path)]
  except (tf.errors.OpError, ValueError):
    names = []
  if not any(name.startswith(key + "/") for name in names):
    other = any(name.startswith(DATA_ITERATOR) for name in names)
    reason = ("was saved for other data, batch, replica or seed settings" if other
              else "is not in the checkpoint")
    log(f"the data position {reason}; the data order starts afresh from the seed, so "
        "this run will not repeat an uninterrupted one exactly")
    return
  try:
    tf.train.Checkpoint(**{key: iterator}).restore(path).assert_existing_objects_matched()
  except Exception as error:  # pylint: disable=broad-except
    raise TrainingError(f"cannot restore the data position from {path}: "
                        f"{run_dir.describe_error(error)}") from None
  log("restored the data position")
