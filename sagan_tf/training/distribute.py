"""Maps a strategy name to a tf.distribute strategy."""

import json
import os

import tensorflow as tf

from sagan_tf.configs.experiment import STRATEGIES


def get_strategy(name="auto", tpu=""):
  """Returns the tf.distribute strategy for `name`.

  "auto" picks a TPU when `tpu` is given, MirroredStrategy on several GPUs,
  else one device. "multi_worker" reads the cluster from TF_CONFIG.

  Raises:
    ValueError: an unknown name, a TPU strategy without an address, a
      multi-worker strategy without TF_CONFIG, or an unreachable TPU.
  """
  if name not in STRATEGIES:
    raise ValueError(f"unknown --strategy={name!r}; choose one of {', '.join(STRATEGIES)}")
  if name == "auto":
    if tpu:
      name = "tpu"
    elif len(tf.config.list_logical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "one_device"
  if name == "one_device":
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG environment variable")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
      raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()
  if not tpu:
    raise ValueError("--strategy=tpu needs --tpu=<name or grpc://address> (or 'local')")
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu == "local" else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError, RuntimeError) as error:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ValueError(f"cannot reach TPU {tpu!r}: {first_line}") from None
  return tf.distribute.TPUStrategy(resolver)
