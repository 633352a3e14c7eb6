"""Tests of Trainer: exact resume, mocked TFDS and image-folder runs as train.py builds them, batch splits."""

import json
import os
import types

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import train
from sagan_tf import configs
from sagan_tf import data
from sagan_tf.training import preflight
from sagan_tf.training import run_dir
from sagan_tf.training import train_lib
from sagan_tf.training import trainer as trainer_lib
from tests import tiny_experiment
# constant_batches: also imported from here by checkpoints_test.
from tests.tiny_experiment import IMAGE_SIZE, constant_batches


def tiny_config(**train_values):
  """The shared tiny experiment with summaries every 2 steps and the preset's train_steps."""
  preset_steps = configs.PRESETS["animal_mnist"]().train.train_steps
  return tiny_experiment.tiny_config(**{"summary_every": 2, "train_steps": preset_steps,
                                        **train_values})


def state(trainer):
  """[(name, value)] of everything a checkpoint holds: models, EMA, Adam slots, step, RNG."""
  items = []
  for group in ("generator", "discriminator", "ema_generator", "g_optimizer", "d_optimizer"):
    items += [(f"{group}:{v.path}", v.numpy()) for v in getattr(trainer, group).variables]
  items += [("step", trainer.step.numpy()), ("rng", trainer.rng.state.numpy())]
  return items


@pytest.fixture(scope="module")
def resume(tmp_path_factory):
  """Trains 2 steps; a fresh Trainer restores them and trains to 4; another trains 4 at once."""
  model_dir = str(tmp_path_factory.mktemp("resumed"))
  logs = []
  first = trainer_lib.Trainer(tiny_config(train_steps=2), model_dir, constant_batches,
                              log=logs.append)
  first.train()
  result = types.SimpleNamespace(
      model_dir=model_dir, logs=logs, saved=state(first),
      trainable_variables=len(first.generator.trainable_variables + first.discriminator.trainable_variables))
  second = trainer_lib.Trainer(tiny_config(train_steps=4), model_dir, constant_batches,
                               log=logs.append)
  result.fresh = state(second)
  result.restored_step = second.restore()
  result.restored = state(second)
  second.train()
  result.resumed = state(second)
  straight = trainer_lib.Trainer(tiny_config(train_steps=4), str(tmp_path_factory.mktemp("straight")),
                                 constant_batches, log=lambda line: None)
  straight.train()
  result.straight = state(straight)
  return result


def test_restore_brings_back_step_weights_and_adam_state(resume):
  assert resume.restored_step == 2
  names = [name for name, _ in resume.saved]
  assert [name for name, _ in resume.restored] == names
  for (name, saved), (_, restored) in zip(resume.saved, resume.restored):
    np.testing.assert_array_equal(restored, saved, err_msg=name)
  saved = dict(resume.saved)
  assert saved["g_optimizer:g_adam/iteration"] == 2 and saved["d_optimizer:d_adam/iteration"] == 2
  slots = [name for name in names if name.endswith(("_momentum", "_velocity"))]
  assert len(slots) == 2 * resume.trainable_variables  # m and v of every trainable variable.
  # Restoring did the work: a fresh Trainer starts from other weights and zero slots.
  fresh = dict(resume.fresh)
  for name in slots + [n for n in names if n.startswith("generator:")]:
    if not np.array_equal(fresh[name], saved[name]):
      break
  else:
    pytest.fail("the fresh Trainer already had the saved state; the restore was not tested")
  assert all(not np.any(fresh[name]) for name in slots)
  assert any(line.startswith("resumed from ") and line.endswith(" at step 2") for line in resume.logs)


def test_two_plus_two_steps_equal_four_steps(resume):
  resumed, straight = dict(resume.resumed), dict(resume.straight)
  assert resumed["step"] == straight["step"] == 4
  assert resumed["g_optimizer:g_adam/iteration"] == straight["g_optimizer:g_adam/iteration"] == 4
  # Same data, restored RNG and Adam state: the same computation as without the break.
  for name, value in resume.straight:
    np.testing.assert_allclose(resumed[name], value, atol=1e-6, rtol=1e-5, err_msg=name)
  checkpoints = tf.train.get_checkpoint_state(os.path.join(resume.model_dir, run_dir.CHECKPOINT_DIR))
  assert [os.path.basename(p) for p in checkpoints.all_model_checkpoint_paths] == ["ckpt-2", "ckpt-4"]


def test_batch_that_does_not_split_over_replicas(monkeypatch, mirrored_strategy, tmp_path):
  monkeypatch.setattr(trainer_lib.distribute, "get_strategy", lambda name, tpu: mirrored_strategy)
  with pytest.raises(trainer_lib.TrainingError, match="batch size 3 does not divide over 2 replicas"):
    trainer_lib.Trainer(tiny_config(batch_size=3), str(tmp_path), constant_batches)


def cli_flags(dataset, *overrides):
  """The flag values train.py would parse: 2 steps of a tiny model on one device."""
  return types.SimpleNamespace(
      dataset=dataset, data_dir=None, preset=None, config_file=None, train_steps=2, batch_size=4,
      steps_per_loop=2, d_steps=None, ema_decay=None, ema_start_step=None, mixed_precision=None,
      jit_compile=None, seed=None, deterministic=None, strategy="one_device", tpu="",
      override=["model.g_width=8", "model.d_width=8", "model.z_dim=16", "train.checkpoint_every=2",
                "train.sample_every=2", "train.summary_every=2", *overrides])


def train_like_cli(argv_flags, model_dir):
  """train.main between flag parsing and export: config, data set info, Trainer, train()."""
  config, overrides = train.resolve_config(argv_flags)
  info = data.get_dataset_info(config.data.dataset, config.data.data_dir, config.data.split)
  config = preflight.with_data_classes(config, overrides, info.num_classes)
  trainer = trainer_lib.Trainer(
      config, model_dir, train_lib.make_dataset_fn(config),
      dataset_info=train_lib.dataset_json(config, info), log=lambda line: None)
  return trainer, trainer.train()


def check_run(trainer, metrics, model_dir, num_classes):
  assert int(trainer.step.numpy()) == 2
  assert metrics["finite"] == 1.0 and np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["g_loss"])
  assert os.path.basename(run_dir.latest_checkpoint(model_dir)) == "ckpt-2"
  with open(os.path.join(model_dir, run_dir.DATASET_FILE)) as f:
    info = json.load(f)
  assert info["num_classes"] == num_classes and len(info["class_names"]) == num_classes
  # The sample grid: one row per class (at most 10) of 8 images enlarged x3, 2 pixels of
  # padding, after a margin of 8 to 140 pixels of class names.
  rows = min(num_classes, 10)
  for step in (0, 2):
    image = PIL.Image.open(os.path.join(model_dir, run_dir.SAMPLE_DIR, f"step_{step:08d}.png"))
    assert image.size[1] == rows * 98 + 2 and image.mode == "RGB"
    assert 8 <= image.size[0] - (8 * 98 + 2) <= 140


@pytest.mark.parametrize("dataset,num_classes,overrides", [
    ("cifar10", 10, []),
    # The preset is the paper's 128-pixel model: 32 pixels keep it cheap.
    ("imagenet2012", 1000, ["model.image_size=32"]),
])
def test_mocked_tfds_runs_end_to_end(dataset, num_classes, overrides, tmp_path):
  model_dir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=16):
    trainer, metrics = train_like_cli(cli_flags(dataset, *overrides), model_dir)
  assert trainer.config.model.image_size == IMAGE_SIZE
  assert trainer.config.model.num_classes == num_classes
  check_run(trainer, metrics, model_dir, num_classes)


def test_image_folder_runs_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  for name in ("ant", "bee", "cow"):
    os.makedirs(tmp_path / "images" / name)
    for index in range(4):
      pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
      PIL.Image.fromarray(pixels).save(tmp_path / "images" / name / f"{index}.png")
  model_dir = str(tmp_path / "run")
  trainer, metrics = train_like_cli(
      cli_flags(f"folder:{tmp_path / 'images'}", "model.image_size=32"), model_dir)
  assert trainer.config.model.num_classes == 3
  check_run(trainer, metrics, model_dir, 3)
  with open(os.path.join(model_dir, run_dir.DATASET_FILE)) as f:
    assert json.load(f)["class_names"] == ["ant", "bee", "cow"]
