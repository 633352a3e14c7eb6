"""Trains a class-conditional SAGAN.

  python train.py                                   # embedded Animal-MNIST, ~10 min on a CPU
  python train.py --dataset=imagenet2012 --data_dir=DIR --model_dir=runs/imagenet
  python train.py --dataset=folder:/path/to/class_folders --override=model.image_size=64

Flags choose the data set (which picks a preset) and the everyday knobs;
`--override section.key=value` (repeatable) or `--config_file` reach every
field of sagan_tf.configs.ExperimentConfig. `--helpfull` lists all flags.
"""

import json
import os
import sys
import tempfile

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


def _fail(message):
  print(f"train.py: error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  # absl would exit 1 with its own two-line message; bad flag values are
  # usage errors like any other, in the one format above.
  try:
    return FLAGS(argv)
  except flags.Error as error:
    _fail(str(error))


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
    except (OSError, json.JSONDecodeError) as error:
      raise ValueError(f"cannot read --config_file={argv_flags.config_file}: {error}") from None
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
  return configs.apply_overrides(config, overrides), overrides


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
  import dataclasses  # pylint: disable=g-import-not-at-top
  from sagan_tf import data  # pylint: disable=g-import-not-at-top
  from sagan_tf.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  try:
    config, overrides = resolve_config(FLAGS)
    info = data.get_dataset_info(config.data.dataset, config.data.data_dir, config.data.split)
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
    model_dir = FLAGS.model_dir
    if os.path.exists(os.path.join(model_dir, "config.json")):
      trainer_lib.check_resumable(config, model_dir)
    try:
      os.makedirs(model_dir, exist_ok=True)
      # A unique name: every worker of a multi-worker run probes the same directory.
      with tempfile.TemporaryFile(dir=model_dir):
        pass
    except OSError as error:
      raise ValueError(f"--model_dir={model_dir} is not writable: {error.strerror}") from None
    print(f"config:\n{config.to_json()}", flush=True)

    def make_dataset(context, per_replica_batch):
      return data.make_dataset(
          config.data.dataset, image_size=config.model.image_size, batch_size=per_replica_batch,
          data_dir=config.data.data_dir, split=config.data.split, shuffle=True, repeat=True,
          random_flip=config.data.random_flip, shuffle_buffer=config.data.shuffle_buffer,
          seed=config.runtime.seed, input_context=context,
          conditional=config.model.num_classes > 0)

    trainer = trainer_lib.Trainer(
        config, model_dir, make_dataset,
        dataset_info={"name": info.name, "num_classes": config.model.num_classes,
                      "class_names": list(info.class_names)[:config.model.num_classes]},
        log=lambda line: print(line, flush=True))
    result = trainer.train()
    # Only the chief exports: the generator's variables are mirrored, every
    # worker holds the same values, and the others must not write model_dir.
    if FLAGS.export and trainer.is_chief and not result.get("stopped_by_signal"):
      from sagan_tf import export  # pylint: disable=g-import-not-at-top
      path = os.path.join(model_dir, "saved_model")
      export.export_generator(trainer.sample_generator, path, step=int(trainer.step.numpy()),
                              class_names=list(info.class_names)[:config.model.num_classes],
                              ema=config.train.ema_decay > 0, dataset=config.data.dataset)
      print(f"exported the generator to {path}", flush=True)
  except (ValueError, data.DataError, trainer_lib.TrainingError) as error:
    _fail(str(error))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
