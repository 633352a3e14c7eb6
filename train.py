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

import sys

from absl import app
from absl import flags

from sagan_tf import console  # pylint: disable=g-bad-import-order
from sagan_tf.training import preflight  # pylint: disable=g-bad-import-order
from sagan_tf.training import signals  # pylint: disable=g-bad-import-order

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
flags.DEFINE_enum("mixed_precision", None, ["float32", "bfloat16", "float16", "auto"],
                  "Compute precision: bfloat16 on TPU/recent GPUs; float16 uses loss scaling; "
                  "auto: bfloat16 on TPUs and on CPUs with AVX512_BF16 or AMX, else float32 "
                  "(the embedded preset's default).")
flags.DEFINE_bool("jit_compile", None, "Compile the updates with XLA.")
flags.DEFINE_integer("seed", None, "Random seed of weights, noise and data order.")
flags.DEFINE_bool("deterministic", None, "Deterministic ops (slower), for exact reruns.")
flags.DEFINE_multi_string("override", [], "section.key=value applied to the config after the "
                          "preset and the flags above, e.g. model.g_width=32 (repeatable).")
flags.DEFINE_string("config_file", None, "JSON file of a full or partial ExperimentConfig "
                    "(as written to model_dir/config.json), applied before --override.")


class _ExportParser(flags.ArgumentParser):
  """--export=best|last|auto, with --export (auto) and --noexport (none) as for a boolean flag."""

  def parse(self, argument):
    text = str(argument).strip().lower()
    text = {"true": "auto", "1": "auto", "false": "none", "0": "none"}.get(text, text)
    if text not in ("auto", "best", "last", "none"):
      raise ValueError(f"expected best, last, auto or none (--noexport), got {argument!r}")
    return text

  def flag_type(self):
    return "best|last|auto|none"


flags.DEFINE_flag(flags.Flag(
    _ExportParser(), flags.ArgumentSerializer(), "export", "auto",
    "What model_dir/saved_model holds at the end: best (the generator of the lowest FID, "
    "checkpoints/best/; needs train.eval_every > 0), last (the last step), auto (best when "
    "evaluation saved one, else last); --noexport exports nothing.", boolean=True))
flags.DEFINE_enum("on_nan", "stop", ["stop", "rollback"],
                  "At a NaN or Inf loss or weight: stop (exit 3, checkpoints untouched), or roll "
                  "back to the newest checkpoint with reseeded noise and go on.")
flags.DEFINE_integer("max_rollbacks", 3, "Rollbacks --on_nan=rollback makes in one process "
                     "before it stops.")


PROGRAM = "train.py"
# Flag -> the config field it sets (None: the preset's value).
FLAG_FIELDS = {"data_dir": "data.data_dir", "train_steps": "train.train_steps",
               "batch_size": "train.batch_size", "steps_per_loop": "train.steps_per_loop",
               "d_steps": "train.d_steps", "ema_decay": "train.ema_decay",
               "ema_start_step": "train.ema_start_step",
               "mixed_precision": "runtime.mixed_precision", "jit_compile": "runtime.jit_compile",
               "seed": "runtime.seed", "deterministic": "runtime.deterministic"}


def _fail(message, status=2):
  console.fail(PROGRAM, message, status)


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
    overrides += configs.overrides_from_file(argv_flags.config_file)
  set_by_flags = {name: getattr(argv_flags, name) for name in FLAG_FIELDS
                  if getattr(argv_flags, name) is not None}
  overrides += [f"{FLAG_FIELDS[name]}={value}" for name, value in set_by_flags.items()]
  overrides += [f"runtime.strategy={argv_flags.strategy}", f"runtime.tpu={argv_flags.tpu}"]
  overrides += list(argv_flags.override)
  try:
    return configs.apply_overrides(config, overrides), overrides
  except ValueError as error:
    raise ValueError(_name_the_flag(str(error), set_by_flags)) from None


def _name_the_flag(message, set_by_flags):
  """Prefixes a config error about a field a flag set (e.g. runtime.seed) with that flag."""
  for name, value in set_by_flags.items():
    key = FLAG_FIELDS[name]
    if message.startswith((key + " ", f"override {key}=")):
      return f"--{name}={value}: {message}"
  return message


def check_flags(argv_flags):
  """Everything that needs no TensorFlow, so that a bad command line fails in a second.

  Returns:
    (config, overrides) from `resolve_config`.

  Raises:
    ValueError: one line naming the problem.
  """
  preflight.logical_cpus()
  config, overrides = resolve_config(argv_flags)
  if argv_flags.max_rollbacks < 0:
    raise ValueError(f"--max_rollbacks must be >= 0, got {argv_flags.max_rollbacks}")
  preflight.check_runtime(config.runtime)
  preflight.check_image_folder(config.data.dataset)
  preflight.check_model_dir(argv_flags.model_dir)
  preflight.check_resumable_early(config, overrides, argv_flags.model_dir)
  if getattr(argv_flags, "export", "auto") == "best" and not config.train.eval_every:
    raise ValueError("--export=best needs evaluation during training: set train.eval_every, "
                     "e.g. --override=train.eval_every=1000")
  return config, overrides


def main(argv):
  startup = signals.StartupSignals().install()
  console.refuse_arguments(PROGRAM, argv)
  try:
    config, overrides = check_flags(FLAGS)
  except ValueError as error:
    _fail(error)
  # Before the rest of TensorFlow starts: the CPU's split into logical devices.
  preflight.split_cpu()
  from sagan_tf.training import train_lib  # pylint: disable=g-import-not-at-top
  run = train_lib.TrainRun(config, overrides, FLAGS.model_dir, startup)
  try:
    run.run(on_nan=FLAGS.on_nan, max_rollbacks=FLAGS.max_rollbacks, export_generator=FLAGS.export)
  except train_lib.Stopped as stopped:
    print(stopped, flush=True)
    sys.exit(0)
  except Exception as error:  # pylint: disable=broad-except
    failure = run.failure(error)
    if failure is None:
      raise
    _fail(*failure)


if __name__ == "__main__":
  app.run(main, flags_parser=console.flags_parser(PROGRAM))
