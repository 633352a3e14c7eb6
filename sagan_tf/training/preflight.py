"""Checks of a training run's settings and surroundings, made before anything is built.

All but `check_file_system` need no TensorFlow, so that train.py fails on a
bad command line in a second; `distribute` makes the same strategy checks
through `check_strategy` when it builds one.
"""

import dataclasses
import json
import os
import re
import socket

from sagan_tf.training import run_dir

# Logical CPU devices to split the CPU into, for multi-replica runs on machines
# without GPUs (`--strategy=mirrored` then takes one replica per device).
LOGICAL_CPUS_ENV = "SAGAN_TF_LOGICAL_CPUS"
_NUM_CLASSES = "model.num_classes="


def logical_cpus():
  """The value of $SAGAN_TF_LOGICAL_CPUS (0 when unset)."""
  text = os.environ.get(LOGICAL_CPUS_ENV, "").strip()
  if not text:
    return 0
  if not text.isdigit() or int(text) < 1:
    raise ValueError(f"{LOGICAL_CPUS_ENV}={text!r}: expected a positive number of logical CPU "
                     "devices")
  return int(text)


def check_strategy(name, tpu):
  """Fails on a strategy that cannot start: a TPU without an address, multi-worker without TF_CONFIG."""
  if name == "tpu" and not tpu:
    raise ValueError("--strategy=tpu needs --tpu=<name or grpc://address> (or 'local')")
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG environment "
                       "variable")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
      raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None


def check_tpu_address(tpu):
  """Fails at once on a grpc://host:port TPU address nothing listens on.

  TensorFlow would retry such an address for ever.
  """
  if not tpu.startswith("grpc://"):
    return
  host, _, port = tpu[len("grpc://"):].rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--tpu={tpu}: expected grpc://host:port")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
      pass
  except OSError as error:
    reason = error.strerror or str(error) or type(error).__name__
    raise ValueError(f"cannot reach TPU {tpu}: {reason}") from None


def check_runtime(runtime):
  """The strategy checks of a RuntimeConfig, the TPU's address probed."""
  check_strategy(runtime.strategy, runtime.tpu)
  if runtime.strategy in ("tpu", "auto") and runtime.tpu:
    check_tpu_address(runtime.tpu)


def check_image_folder(dataset):
  """Fails on a local folder:/path data set whose folder is missing."""
  if not dataset.startswith("folder:") or "://" in dataset:
    return
  root = os.path.expanduser(dataset[len("folder:"):])
  if not root:
    raise ValueError(f"--dataset={dataset} names no folder; use folder:/path/to/class_folders")
  if not os.path.isdir(root):
    what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
    raise ValueError(f"image folder {root} {what} (expected <folder>/<class_name>/<image>.jpg)")


def check_model_dir(model_dir):
  """Fails if `model_dir` cannot be created or written, without creating it yet."""
  if not model_dir.strip():
    raise ValueError("--model_dir is empty; name the run directory, e.g. --model_dir=runs/x")
  if "://" in model_dir:
    scheme, _, rest = model_dir.partition("://")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) or not rest.strip("/"):
      raise ValueError(f"--model_dir={model_dir} is not a valid URL; expected scheme://bucket/path "
                       "(e.g. gs://bucket/runs/x) or a local path")
    return
  path = os.path.abspath(model_dir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--model_dir={model_dir} is a file, not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ValueError(f"--model_dir={model_dir} cannot be created: {parent} is a file")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f"--model_dir={model_dir} is not writable: no write permission on {parent}")


def with_data_classes(config, overrides, num_classes):
  """`config` with model.num_classes from the data, unless an override set it."""
  if any(item.startswith(_NUM_CLASSES) for item in overrides):
    return config
  return dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                               num_classes=num_classes))


def check_num_classes(config, info):
  """Fails when model.num_classes does not fit the data set `info` (a DatasetInfo)."""
  # Fewer classes than the data has is refused too: the labels are not
  # filtered, and a smaller class table fails mid-training on the first
  # label past it (silently wrong on GPUs).
  if config.model.num_classes not in (0, info.num_classes):
    allowed = f"{info.num_classes} or 0 (unconditional)" if info.num_classes else "0"
    raise ValueError(f"model.num_classes={config.model.num_classes} but {info.name} has "
                     f"{info.num_classes} classes; set model.num_classes={allowed}")
  if config.model.num_classes and info.num_classes == 1:
    raise ValueError(f"{info.name} has a single class; a conditional model needs two or more "
                     "(or set model.num_classes=0 for an unconditional model)")


def check_resumable_early(config, overrides, model_dir):
  """Refuses a local run directory of another model, comparing what is known before the data."""
  if "://" in model_dir or not os.path.exists(os.path.join(model_dir, run_dir.CONFIG_FILE)):
    return
  # num_classes comes from the data set later; compare what is known now.
  saved = run_dir.read_config(model_dir)
  run_dir.check_resumable(with_data_classes(config, overrides, saved.model.num_classes), model_dir)


def check_file_system(path, flag):
  """Fails on a URL whose scheme this TensorFlow has no file system for (s3:// without a plugin).

  TensorFlow would raise UnimplementedError at the first file operation.
  Needs TensorFlow: the registered schemes include those of installed
  file-system plugins.
  """
  if "://" not in path:
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scheme = path.split("://", 1)[0]
  known = sorted(s for s in tf.io.gfile.get_registered_schemes() if s)
  if scheme not in known:
    raise ValueError(f"{flag}={path}: this TensorFlow has no file system for {scheme}:// (it "
                     f"has {', '.join(s + '://' for s in known)} and local paths); s3://, hdfs:// "
                     "and az:// need a file-system plugin such as tensorflow-io")


def split_cpu():
  """Splits the CPU into $SAGAN_TF_LOGICAL_CPUS logical devices; before TensorFlow starts its runtime."""
  count = logical_cpus()
  if count > 1:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
