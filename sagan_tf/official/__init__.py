"""Loading, converting and checking checkpoints of the official TF1 SAGAN and of TF-GAN's example.

  python -m sagan_tf.official --checkpoint=PATH [--model_dir=DIR] [--verify=expected.npz]
      [--restore_optimizer]

The official code (brain-research/self-attention-gan) writes name-based TF1
checkpoints (`model/g_block1/snconv1/w`, ...). `load_official` reads one with
`tf.train.load_checkpoint`, infers the model sizes from the variable shapes,
builds our models with the official semantics and assigns every variable;
`verify_official` checks the conversion, and one training step of
`sagan_tf.training.step.TrainStep` (the step train.py runs) from it, against
values recorded from the official code. `load_tfgan` does the same for
TF-GAN's `self_attention_estimator` example. See docs/official_parity.md.

A module per concern:

- `names`: the official checkpoint names of our models' variables (one
  model walker, a `NameScheme` per checkpoint format);
- `reader`: opening a checkpoint and assigning variables, shared by both loaders;
- `sizes`: model sizes inferred from variable shapes;
- `checkpoint_io`: `load_official` (with the Adam slots) and `save_official`;
- `parity`: the comparison with recorded official values and its tolerances;
- `tfgan`: TF-GAN's names and `load_tfgan`;
- `cli`: the command line (`__main__` runs it).

The names below are imported from those modules on first use, so that
`python -m sagan_tf.official`, which imports this package first, can quiet
the console (`sagan_tf.console.setup`) before TensorFlow loads.
"""

import importlib

_EXPORTS = {
    "names": ("OFFICIAL_PREFIX", "MappedVariable", "NameScheme", "official_generator_entries",
              "official_discriminator_entries", "official_entries", "official_variable_map",
              "official_shapes"),
    "reader": ("D_BETA_POWERS", "G_BETA_POWERS", "COUNTERS", "OfficialCheckpointError",
               "LoadReport", "LoadedModels"),
    "sizes": ("official_model_config",),
    "checkpoint_io": ("G_LEARNING_RATE", "D_LEARNING_RATE", "ADAM_BETA_1", "ADAM_BETA_2",
                      "ADAM_EPSILON", "make_official_optimizers", "adam_slots", "load_official",
                      "write_checkpoint", "official_checkpoint_values", "save_official"),
    "parity": ("OUTPUT_TOLERANCE", "GRADIENT_TOLERANCE", "BIAS_GRADIENT_FLOOR", "STEP_TOLERANCE",
               "U_TOLERANCE", "reference_run", "Comparison", "near_zero_gradient", "compare",
               "verify_official", "official_step", "verify_step2", "format_comparisons"),
    "tfgan": ("TFGAN_POWER_ITERATIONS", "tfgan_entries", "estimate_u", "load_tfgan"),
    "cli": ("convert", "run"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
  module = _MODULE_OF.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
  globals()[name] = value  # later look-ups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
