"""Trains a class-conditional SAGAN.

  python train.py                                   # embedded Animal-MNIST, ~10 min on a CPU
  python train.py --dataset=imagenet2012 --data_dir=DIR --model_dir=runs/imagenet
  python train.py --dataset=folder:/path/to/class_folders --override=model.image_size=64

Flags choose the data set (which picks a preset) and the everyday knobs;
`--override section.key=value` (repeatable) or `--config_file` reach every
field of sagan_tf.configs.ExperimentConfig. `--helpfull` lists all flags.

SIGTERM or SIGINT saves a checkpoint and exits 0; the same command resumes.
Exit status 2 is a usage error (one line on stderr), 3 a divergence, 4 a
file that could not be written (disk full), 1 a failure mid-run;
docs/reliability.md has the details.
"""

import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags

from sagan_tf import console  # pylint: disable=g-bad-import-order

if __name__ == "__main__":
  # Before TensorFlow is imported: keeps its log lines off the console
  # ($SAGAN_TF_VERBOSE=1 or --verbosity=0 bring them back).
  console.setup()

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "animal_mnist",
                    "animal_mnist (embedded, no download), a TFDS name (imagenet2012, cifar10, "
                    "celeb_a, lsun/bedroom, ...) or folder:/path with one sub-folder per class. "
                    "Picks the preset: imagenet2012 is the paper's 128x128 run.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (where prepared data sets live).")
flags.DEFINE_string("model_dir", "runs/default",
                    "Run directory: checkpoints, samples, summaries, config and the exported "
                    "generator. An existing run there is resumed.")
flags.DEFINE_string("preset", None, "Preset name to start from instead of the data set's: "
                    "animal_mnist, imagenet2012, official, cifar10, celeb_a.")
flags.DEFINE_integer("train_steps", None, "Generator updates in the whole run (preset default).")
flags.DEFINE_integer("batch_size", None, "Global batch size, split over replicas (preset default).")
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy; auto: TPU if --tpu, Mirrored on several GPUs, "
                  "else one device. multi_worker reads TF_CONFIG.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address (or 'local') for --strategy=tpu.")
flags.DEFINE_integer("steps_per_loop", None, "Training iterations per compiled call on the device.")
flags.DEFINE_integer("d_steps", None, "Discriminator updates per generator update (official: 1).")
flags.DEFINE_float("ema_decay", None, "Decay of the generator weight average; 0 turns it off.")
flags.DEFINE_integer("ema_start_step", None, "Step from which the weight average is kept.")
flags.DEFINE_enum("mixed_precision", None, ["float32", "bfloat16", "float16"],
                  "Compute precision: bfloat16 on TPU/recent GPUs; float16 uses loss scaling.")
flags.DEFINE_bool("jit_compile", None, "Compile the updates with XLA.")
flags.DEFINE_integer("seed", None, "Random seed of weights, noise and data order.")
flags.DEFINE_bool("deterministic", None, "Deterministic ops (slower), for exact reruns.")
flags.DEFINE_multi_string("override", [], "section.key=value applied to the config after the "
                          "preset and the flags above, e.g. model.g_width=32 (repeatable).")
flags.DEFINE_string("config_file", None, "JSON file of a full or partial ExperimentConfig "
                    "(as written to model_dir/config.json), applied before --override.")
flags.DEFINE_bool("export", True, "Export the generator as a SavedModel at the end.")
flags.DEFINE_enum("on_nan", "stop", ["stop", "rollback"],
                  "At a NaN or Inf loss or weight: stop (exit 3, checkpoints untouched), or roll "
                  "back to the newest checkpoint with reseeded noise and go on.")
flags.DEFINE_integer("max_rollbacks", 3, "Rollbacks --on_nan=rollback makes in one process "
                     "before it stops.")


# Exit statuses; docs/reliability.md explains them.
EXIT_USAGE = 2       # a bad command line, config, data set or run directory
EXIT_DIVERGED = 3    # a NaN or Inf loss or weight (after any rollbacks)
EXIT_FAILED = 1      # a TensorFlow error mid-run (out of memory, ...), or a crash
# 4 (sagan_tf.storage.EXIT_WRITE_FAILED): a file could not be written (disk full, ...)
# Logical CPU devices to split the CPU into, for multi-replica runs on machines
# without GPUs (`--strategy=mirrored` then takes one replica per device).
LOGICAL_CPUS_ENV = "SAGAN_TF_LOGICAL_CPUS"
# Seconds a TPU may take to connect and initialise before train.py gives up.
TPU_TIMEOUT_ENV = "SAGAN_TF_TPU_TIMEOUT"
TPU_TIMEOUT_DEFAULT = 600
LOCK_FILE = ".train.lock"


def _fail(message, status=EXIT_USAGE):
  print(f"train.py: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def _parse_flags(argv):
  # absl would exit 1 with its own two-line message; bad flag values are
  # usage errors like any other, in the one format above.
  try:
    return FLAGS(argv)
  except flags.Error as error:
    _fail(str(error))


class _StartupSignals:
  """Records SIGTERM/SIGINT during start-up, when there is nothing to save yet.

  The Trainer takes over once training starts and stops at once on a signal
  recorded here. A second signal exits immediately.
  """

  def __init__(self):
    self.signal = None

  def install(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signal = signal.Signals(signum).name


def resolve_config(argv_flags):
  """The ExperimentConfig from preset, config file, flags and overrides, in that order."""
  from sagan_tf import configs  # pylint: disable=g-import-not-at-top
  if argv_flags.preset:
    if argv_flags.preset not in configs.PRESETS:
      raise ValueError(f"unknown --preset={argv_flags.preset!r}; presets: {sorted(configs.PRESETS)}")
    config = configs.PRESETS[argv_flags.preset]()
  else:
    config = configs.preset_for_dataset(argv_flags.dataset)
  overrides = [f"data.dataset={argv_flags.dataset}"]
  if argv_flags.config_file:
    try:
      with open(argv_flags.config_file) as f:
        values = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
      raise ValueError(f"cannot read --config_file={argv_flags.config_file}: {error}") from None
    except RecursionError:
      raise ValueError(f"cannot read --config_file={argv_flags.config_file}: nested too deeply "
                       "(expected {\"section\": {\"key\": value}})") from None
    if not isinstance(values, dict):
      raise ValueError(f"--config_file={argv_flags.config_file}: expected a JSON object of "
                       f"sections, got {type(values).__name__}")
    for section, fields in values.items():
      if not isinstance(fields, dict):
        raise ValueError(f"--config_file: section {section!r} must be an object")
      overrides += [f"{section}.{key}={'' if value is None else value}"
                    for key, value in fields.items()]
  mapping = {"data_dir": "data.data_dir", "train_steps": "train.train_steps",
             "batch_size": "train.batch_size", "steps_per_loop": "train.steps_per_loop",
             "d_steps": "train.d_steps", "ema_decay": "train.ema_decay",
             "ema_start_step": "train.ema_start_step", "mixed_precision": "runtime.mixed_precision",
             "jit_compile": "runtime.jit_compile", "seed": "runtime.seed",
             "deterministic": "runtime.deterministic"}
  for flag_name, key in mapping.items():
    value = getattr(argv_flags, flag_name)
    if value is not None:
      overrides.append(f"{key}={value}")
  overrides += [f"runtime.strategy={argv_flags.strategy}", f"runtime.tpu={argv_flags.tpu}"]
  overrides += list(argv_flags.override)
  try:
    return configs.apply_overrides(config, overrides), overrides
  except ValueError as error:
    raise ValueError(_name_the_flag(str(error), argv_flags, mapping)) from None


def _name_the_flag(message, argv_flags, mapping):
  """Prefixes a config error about a field a flag set (e.g. runtime.seed) with that flag."""
  for flag_name, key in mapping.items():
    value = getattr(argv_flags, flag_name)
    if value is not None and message.startswith((key + " ", f"override {key}=")):
      return f"--{flag_name}={value}: {message}"
  return message


def _ignore_stop_signals():
  """Lets a SIGTERM or SIGINT during TensorFlow's shutdown pass: the work is saved, exit 0."""
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)


def _logical_cpus():
  """The value of $SAGAN_TF_LOGICAL_CPUS (0 when unset)."""
  text = os.environ.get(LOGICAL_CPUS_ENV, "").strip()
  if not text:
    return 0
  if not text.isdigit() or int(text) < 1:
    raise ValueError(f"{LOGICAL_CPUS_ENV}={text!r}: expected a positive number of logical CPU "
                     "devices")
  return int(text)


def _check_tpu_address(tpu):
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


def _check_model_dir(model_dir):
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


def check_flags(argv_flags):
  """Everything that needs no TensorFlow, so that a bad command line fails in a second.

  Returns:
    (config, overrides) from `resolve_config`.

  Raises:
    ValueError: one line naming the problem.
  """
  _logical_cpus()
  config, overrides = resolve_config(argv_flags)
  if argv_flags.max_rollbacks < 0:
    raise ValueError(f"--max_rollbacks must be >= 0, got {argv_flags.max_rollbacks}")
  runtime = config.runtime
  if runtime.strategy == "tpu" and not runtime.tpu:
    raise ValueError("--strategy=tpu needs --tpu=<name or grpc://address> (or 'local')")
  if runtime.strategy in ("tpu", "auto") and runtime.tpu:
    _check_tpu_address(runtime.tpu)
  if runtime.strategy == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG environment "
                       "variable")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
      raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
  dataset = config.data.dataset
  if dataset.startswith("folder:") and "://" not in dataset:
    root = os.path.expanduser(dataset[len("folder:"):])
    if not root:
      raise ValueError(f"--dataset={dataset} names no folder; use folder:/path/to/class_folders")
    if not os.path.isdir(root):
      what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
      raise ValueError(f"image folder {root} {what} (expected <folder>/<class_name>/<image>.jpg)")
  _check_model_dir(argv_flags.model_dir)
  from sagan_tf.training import run_dir  # pylint: disable=g-import-not-at-top
  if "://" not in argv_flags.model_dir and os.path.exists(
      os.path.join(argv_flags.model_dir, run_dir.CONFIG_FILE)):
    # num_classes comes from the data set later; compare what is known now.
    saved = run_dir.read_config(argv_flags.model_dir)
    if not any(item.startswith("model.num_classes=") for item in overrides):
      config_now = dataclasses.replace(
          config, model=dataclasses.replace(config.model, num_classes=saved.model.num_classes))
    else:
      config_now = config
    run_dir.check_resumable(config_now, argv_flags.model_dir)
  return config, overrides


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


def _lock_model_dir(model_dir):
  """Holds an exclusive lock on model_dir/.train.lock for the life of the process.

  Two runs writing one run directory would interleave their checkpoints;
  the OS drops the lock when the process ends, however it ends.
  """
  if "://" in model_dir:
    return None
  path = os.path.join(model_dir, LOCK_FILE)
  handle = open(path, "a+")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    handle.seek(0)
    owner = handle.read().strip() or "?"
    handle.close()
    raise ValueError(f"another train.py (pid {owner}) is training in {model_dir}; wait for it "
                     "to end or stop it") from None
  handle.seek(0)
  handle.truncate()
  handle.write(str(os.getpid()))
  handle.flush()
  return handle


def _start_tpu_watchdog(runtime):
  """Exits with a one-line error when a TPU does not connect in time (TF may wait for ever)."""
  if not (runtime.strategy == "tpu" or (runtime.strategy == "auto" and runtime.tpu)):
    return None
  text = os.environ.get(TPU_TIMEOUT_ENV, str(TPU_TIMEOUT_DEFAULT))
  try:
    seconds = float(text)
  except ValueError:
    seconds = TPU_TIMEOUT_DEFAULT

  def give_up():
    print(f"train.py: error: TPU {runtime.tpu!r} did not connect and initialise within "
          f"{seconds:.0f} s (${TPU_TIMEOUT_ENV}); check the address and that the TPU is up",
          file=sys.stderr, flush=True)
    os._exit(EXIT_USAGE)  # pylint: disable=protected-access

  timer = threading.Timer(seconds, give_up)
  timer.daemon = True
  timer.start()
  return timer


def _find_undecodable_image(dataset):
  """The DataError naming the images of a folder data set that do not decode now, or None.

  For a file that went bad after the check before step 0: TensorFlow's
  error inside a compiled chunk does not name it.
  """
  from sagan_tf.data import folder  # pylint: disable=g-import-not-at-top
  from sagan_tf.data import DataError  # pylint: disable=g-import-not-at-top
  listing = folder.list_image_folder(os.path.expanduser(dataset[len(folder.PREFIX):]))
  bad = folder.find_bad_images(listing.paths)
  if not bad:
    return None
  more = f" ({len(bad) - 1} more such files)" if len(bad) > 1 else ""
  return DataError(f"{bad[0][0]}: cannot be read as an image by TensorFlow ({bad[0][1]}){more}")


def _export(trainer, model_dir, info, config):
  """Exports the generator to model_dir/saved_model through a temporary folder and renames.

  A kill mid-export leaves the previous export (or none) and a
  saved_model.partial folder, never a half-written saved_model.
  """
  from sagan_tf import export  # pylint: disable=g-import-not-at-top
  from sagan_tf.training import run_dir  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, run_dir.SAVED_MODEL_DIR)
  local = "://" not in path
  target = path + ".partial" if local else path
  for leftover in (path + ".partial", path + ".old"):
    if local and os.path.exists(leftover):
      shutil.rmtree(leftover)
  from sagan_tf import storage  # pylint: disable=g-import-not-at-top
  previous = "the previous export is intact" if _tf_exists(path) else "nothing was exported"
  with storage.writing("the exported generator", model_dir,
                       (lambda: storage.remove_quietly(target)) if local else None,
                       f"removed the partial export; {previous}; the checkpoints are intact; "
                       "free some space and run the same command to export"):
    export.export_generator(trainer.sample_generator, target, step=int(trainer.step.numpy()),
                            class_names=list(info.class_names)[:config.model.num_classes],
                            ema=config.train.ema_decay > 0, dataset=config.data.dataset)
  if local:
    if os.path.exists(path):
      os.rename(path, path + ".old")
    os.rename(target, path)
    if os.path.exists(path + ".old"):
      shutil.rmtree(path + ".old")
  return path


def _tf_exists(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.exists(path)


def _remove_new_run_dir(model_dir):
  """Removes a run directory this process created if nothing but its lock went into it.

  A run refused at start-up (a value Keras or TensorFlow rejects, ...) then
  leaves no empty run directory that looks like a started run.
  """
  try:
    if set(os.listdir(model_dir)) <= {LOCK_FILE}:
      shutil.rmtree(model_dir)
  except OSError:
    pass


def main(argv):
  startup = _StartupSignals().install()
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
  try:
    config, overrides = check_flags(FLAGS)
  except ValueError as error:
    _fail(error)
  # Multi-worker runs leave only together (see Trainer): no early exits there.
  solo = config.runtime.strategy != "multi_worker"

  def stopped_before_training(where):
    if solo and startup.signal is not None:
      print(f"stopped by {startup.signal} {where}; nothing to save", flush=True)
      sys.exit(0)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logical_cpus = _logical_cpus()
  if logical_cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
  from sagan_tf import data  # pylint: disable=g-import-not-at-top
  from sagan_tf import storage  # pylint: disable=g-import-not-at-top
  from sagan_tf.training import run_dir  # pylint: disable=g-import-not-at-top
  from sagan_tf.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  stopped_before_training("during start-up")
  created = False
  try:
    check_file_system(FLAGS.model_dir, "--model_dir")
    if config.data.dataset.startswith("folder:"):
      check_file_system(config.data.dataset[len("folder:"):], "--dataset=folder:")
    if config.data.data_dir:
      check_file_system(config.data.data_dir, "--data_dir")
    info = data.get_dataset_info(config.data.dataset, config.data.data_dir, config.data.split,
                                 skip_bad_images=config.data.skip_bad_images)
    if info.skipped:
      path, reason = info.skipped[0]
      print(f"skipped {len(info.skipped)} image(s) TensorFlow cannot decode "
            f"(data.skip_bad_images=true), e.g. {path}: {reason}; training on the other "
            f"{info.num_examples}", flush=True)
    if not any(item.startswith("model.num_classes=") for item in overrides):
      config = dataclasses.replace(
          config, model=dataclasses.replace(config.model, num_classes=info.num_classes))
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
    model_dir = FLAGS.model_dir
    dataset_info = {"name": info.name, "num_classes": config.model.num_classes,
                    "class_names": list(info.class_names)[:config.model.num_classes]}
    if tf.io.gfile.exists(os.path.join(model_dir, run_dir.CONFIG_FILE)):
      # Before anything is written: dataset.json and config.json are
      # replaced only once the run is known to continue.
      for line in run_dir.check_resumable(config, model_dir, dataset_info):
        print(f"resuming with a changed setting, adopted: {line}", flush=True)
    created = not tf.io.gfile.exists(model_dir)
    try:
      tf.io.gfile.makedirs(model_dir)
      if "://" not in model_dir:
        # A unique name: every worker of a multi-worker run probes the same directory.
        with tempfile.TemporaryFile(dir=model_dir):
          pass
    except (OSError, tf.errors.OpError) as error:
      reason = getattr(error, "strerror", None) or run_dir.describe_error(error)
      raise ValueError(f"--model_dir={model_dir} is not writable: {reason}") from None
    lock = _lock_model_dir(model_dir) if solo else None  # pylint: disable=unused-variable
    print(f"config:\n{config.to_json()}", flush=True)
    stopped_before_training("before training started")

    def make_dataset(context, per_replica_batch):
      return data.make_dataset(
          config.data.dataset, image_size=config.model.image_size, batch_size=per_replica_batch,
          data_dir=config.data.data_dir, split=config.data.split, shuffle=True, repeat=True,
          random_flip=config.data.random_flip, shuffle_buffer=config.data.shuffle_buffer,
          seed=config.runtime.seed, input_context=context,
          conditional=config.model.num_classes > 0,
          skip_bad_images=config.data.skip_bad_images)

    watchdog = _start_tpu_watchdog(config.runtime)
    trainer = trainer_lib.Trainer(
        config, model_dir, make_dataset,
        dataset_info=dataset_info,
        log=lambda line: print(line, flush=True), on_nan=FLAGS.on_nan,
        max_rollbacks=FLAGS.max_rollbacks)
    if watchdog is not None:
      watchdog.cancel()
    try:
      result = trainer.train(stop_request=startup)
    except trainer_lib.StepError as error:
      if isinstance(error.op_error, tf.errors.ResourceExhaustedError):
        _fail(trainer_lib.out_of_memory_message(error.op_error, config, error.step), EXIT_FAILED)
      if config.data.dataset.startswith("folder:"):
        culprit = _find_undecodable_image(config.data.dataset)
        if culprit is not None:
          raise data.DataError(f"{culprit}; fix or remove it, then run the same command to resume "
                               f"from the last checkpoint") from None
      _fail(error, EXIT_FAILED)
    if result.get("stopped_by_signal"):
      _ignore_stop_signals()
      return
    # Only the chief exports: the generator's variables are mirrored, every
    # worker holds the same values, and the others must not write model_dir.
    if FLAGS.export and trainer.is_chief:
      stopped_before_training("before the export (run the same command to export)")
      path = _export(trainer, model_dir, info, config)
      print(f"exported the generator to {path}", flush=True)
    _ignore_stop_signals()
  except trainer_lib.DivergenceError as error:
    _fail(error, EXIT_DIVERGED)
  except storage.WriteError as error:
    _fail(error, storage.EXIT_WRITE_FAILED)
  except (OSError, tf.errors.OpError) as error:
    # A write outside `storage.writing` (e.g. the summary writer closing on
    # a full disk; TensorFlow reports ENOSPC as ResourceExhaustedError).
    if storage.is_write_failure(error):
      _fail(f"cannot write to {FLAGS.model_dir}: {storage.describe(error)} "
            f"({storage.free_space(FLAGS.model_dir)}); the checkpoints are intact; free some "
            "space and run the same command to resume", storage.EXIT_WRITE_FAILED)
    if isinstance(error, tf.errors.ResourceExhaustedError):
      # Outside the training chunks: building, tracing, the first samples.
      _fail(trainer_lib.out_of_memory_message(error, config), EXIT_FAILED)
    raise
  except (ValueError, data.DataError, trainer_lib.TrainingError) as error:
    if created:
      _remove_new_run_dir(model_dir)
    _fail(error)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
