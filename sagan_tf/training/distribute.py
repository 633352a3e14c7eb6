"""Maps a strategy name (or a run's RuntimeConfig) to a tf.distribute strategy."""

import tensorflow as tf

from sagan_tf.configs.experiment import STRATEGIES
from sagan_tf.training import preflight


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
    return mirrored_strategy()
  preflight.check_strategy(name, tpu)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu == "local" else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError, RuntimeError) as error:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ValueError(f"cannot reach TPU {tpu!r}: {first_line}") from None
  return tf.distribute.TPUStrategy(resolver)


def make_strategy(runtime):
  """The strategy of a RuntimeConfig; "mirrored" on a machine without GPUs spans all logical CPUs.

  tf.distribute.MirroredStrategy() alone takes only CPU:0 there; with the CPU
  split into logical devices (train.py's SAGAN_TF_LOGICAL_CPUS) a CPU-only
  machine runs the multi-replica code path.
  """
  # Listing logical devices starts the TensorFlow runtime, after which a
  # multi-worker strategy can no longer be set up: only for "mirrored".
  if runtime.strategy == "mirrored" and not tf.config.list_logical_devices("GPU"):
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
      return mirrored_strategy([device.name for device in cpus])
  return get_strategy(runtime.strategy, runtime.tpu)


# One MirroredStrategy per device set, for the whole process; see mirrored_strategy.
_MIRRORED = {}


def mirrored_strategy(devices=None):
  """The process's MirroredStrategy over `devices` (None: all GPUs, else CPU:0).

  Every new MirroredStrategy numbers its collective ops from the same first
  key, and the runtime remembers the shape of each (group, instance) key. A
  second strategy over the same devices in one process (a notebook running two
  trainings, a sweep, a test session) then meets the first one's shapes:
  "Shape mismatch in the collective instance N". TensorFlow's own tests raise a
  private key base per strategy (distribute/strategy_combinations.py,
  `_mirrored_strategy_with_collective_key_base`); reusing one strategy per
  device set keeps a single key counter with public API only.
  """
  key = None if devices is None else tuple(_canonical(device) for device in devices)
  if key not in _MIRRORED:
    _MIRRORED[key] = tf.distribute.MirroredStrategy(None if key is None else list(key))
  return _MIRRORED[key]


def _canonical(device):
  """'CPU:0', '/cpu:0' and '/job:localhost/replica:0/task:0/device:CPU:0' name one device."""
  local = tf.DeviceSpec(job="localhost", replica=0, task=0)
  return local.make_merged_spec(tf.DeviceSpec.from_string(device)).to_string()
