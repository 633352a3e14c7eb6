"""Damaged run directories: training falls back to an older checkpoint, errors name the file.

The command-line side (evaluate.py on broken checkpoints, SavedModels,
Inception weights; garbled config.json) is in bad_input_test.py.
"""

import dataclasses
import os
import shutil
import types

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf import data
from sagan_tf import export
from sagan_tf.data import folder
from sagan_tf.training import run_dir
from sagan_tf.training import train_lib
from sagan_tf.training import trainer as trainer_lib
from tests.reliability import constant_batches, tiny_config

DATA_FILE = "ckpt-4.data-00000-of-00001"


def make_trainer(model_dir, logs, **train_values):
  return trainer_lib.Trainer(tiny_config(**train_values), model_dir, constant_batches,
                             log=logs.append)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A run directory with checkpoints at steps 2 and 4 (and different weights in each)."""
  model_dir = str(tmp_path_factory.mktemp("base") / "run")
  trainer = make_trainer(model_dir, [])
  os.makedirs(model_dir)
  run_dir.write_json(os.path.join(model_dir, run_dir.CONFIG_FILE), trainer.config.to_dict())
  for step in (2, 4):
    trainer.step.assign(step)
    trainer.generator.trainable_variables[0].assign_add(tf.ones_like(
        trainer.generator.trainable_variables[0]))
    trainer._save()  # pylint: disable=protected-access
  return model_dir


@pytest.fixture
def copy_of(base_run, tmp_path):
  def copy():
    target = str(tmp_path / "run")
    shutil.copytree(base_run, target)
    return target, os.path.join(target, run_dir.CHECKPOINT_DIR)
  return copy


def garble(path):
  size = os.path.getsize(path)
  with open(path, "wb") as f:
    f.write(bytes(np.random.default_rng(3).integers(0, 256, max(size, 64), dtype=np.uint8)))


@pytest.mark.parametrize("damage", ["truncated_data", "garbled_index"])
def test_unreadable_newest_checkpoint_falls_back_to_the_older_one(damage, copy_of):
  model_dir, checkpoints = copy_of()
  if damage == "truncated_data":
    os.truncate(os.path.join(checkpoints, DATA_FILE), 1000)
  else:
    garble(os.path.join(checkpoints, "ckpt-4.index"))
  logs = []
  trainer = make_trainer(model_dir, logs)
  assert trainer.restore() == 2
  unreadable = [line for line in logs if "cannot be read" in line]
  assert len(unreadable) == 1 and "ckpt-4 cannot be read (" in unreadable[0]
  assert unreadable[0].endswith("; trying an older one")
  assert any(line.endswith("ckpt-2 at step 2") for line in logs)


def test_resumed_run_trains_on_from_the_older_checkpoint(copy_of):
  model_dir, checkpoints = copy_of()
  os.truncate(os.path.join(checkpoints, DATA_FILE), 1000)
  logs = []
  trainer = make_trainer(model_dir, logs, train_steps=6)
  trainer.train()
  assert int(trainer.step.numpy()) == 6
  assert os.path.basename(run_dir.latest_checkpoint(model_dir)) == "ckpt-6"
  # ckpt-4 is written again, whole, by the resumed run.
  assert tf.train.load_checkpoint(os.path.join(checkpoints, "ckpt-4")).get_tensor(
      "step/.ATTRIBUTES/VARIABLE_VALUE") == 4


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(copy_of):
  model_dir, checkpoints = copy_of()
  for step in (2, 4):
    garble(os.path.join(checkpoints, f"ckpt-{step}.index"))
  before = {name: os.path.getsize(os.path.join(checkpoints, name))
            for name in os.listdir(checkpoints)}
  with pytest.raises(trainer_lib.TrainingError, match=r"none of the 2 checkpoint\(s\) in .* can be "
                     r"read \(newest: .*\); they are left untouched; to train afresh, pass another "
                     r"--model_dir") as raised:
    make_trainer(model_dir, []).restore()
  assert "move" not in str(raised.value) and "delete" not in str(raised.value)
  assert {name: os.path.getsize(os.path.join(checkpoints, name))
          for name in os.listdir(checkpoints)} == before


@pytest.mark.parametrize("state", ["garbled", "missing"])
def test_lost_checkpoint_state_file_is_rebuilt_from_the_files(state, copy_of):
  model_dir, checkpoints = copy_of()
  path = os.path.join(checkpoints, "checkpoint")
  if state == "garbled":
    garble(path)
  else:
    os.remove(path)
  logs = []
  trainer = make_trainer(model_dir, logs)
  assert trainer.restore() == 4
  assert run_dir.latest_checkpoint(model_dir).endswith("ckpt-4")
  problem = "cannot be read" if state == "garbled" else "is missing"
  assert any(f"checkpoint state file {path} {problem}" in line for line in logs)
  assert os.path.exists(path + ".unreadable") == (state == "garbled")
  # Rebuilt, so that the manager keeps rotating the old checkpoints out.
  assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(
      checkpoints).all_model_checkpoint_paths] == ["ckpt-2", "ckpt-4"]
  assert [os.path.basename(p) for p in trainer.manager.checkpoints] == ["ckpt-2", "ckpt-4"]


def test_save_cut_short_leaves_the_previous_checkpoint_restorable(copy_of):
  # What a kill -9 inside CheckpointManager.save leaves: a temporary folder
  # and part of the next checkpoint's files, not yet in the state file.
  model_dir, checkpoints = copy_of()
  os.makedirs(os.path.join(checkpoints, "ckpt-6_temp"))
  with open(os.path.join(checkpoints, "ckpt-6_temp", "part-00000-of-00001.data-00000-of-00001"),
            "wb") as f:
    f.write(b"\0" * 100)
  shutil.copy(os.path.join(checkpoints, DATA_FILE),
              os.path.join(checkpoints, "ckpt-6.data-00000-of-00001"))
  logs = []
  trainer = make_trainer(model_dir, logs)  # train_steps=8 would train: stop at 4.
  trainer.config = dataclasses.replace(
      trainer.config, train=dataclasses.replace(trainer.config.train, train_steps=4))
  trainer.train()
  assert any(line.startswith("resumed from") and line.endswith("ckpt-4 at step 4") for line in logs)
  assert "removed ckpt-6_temp, left by a save that was cut short" in logs
  assert not os.path.exists(os.path.join(checkpoints, "ckpt-6_temp"))


def test_library_errors_name_the_damaged_file(copy_of):
  model_dir, checkpoints = copy_of()
  os.truncate(os.path.join(checkpoints, DATA_FILE), 1000)
  with pytest.raises(run_dir.RunDirError, match=r"cannot restore the generator from checkpoint "
                     r".*ckpt-4: IndexError"):
    run_dir.load_generator(model_dir)
  garble(os.path.join(checkpoints, "checkpoint"))
  assert run_dir.latest_checkpoint(model_dir).endswith("ckpt-4")
  for name, what in ((run_dir.CONFIG_FILE, "config"),
                     (run_dir.DATASET_FILE, "data set description")):
    path = os.path.join(model_dir, name)
    with open(path, "w") as f:
      f.write('{"model": ')
    with pytest.raises(run_dir.RunDirError, match=f"{path} is not a valid {what}"):
      (run_dir.read_config if name == run_dir.CONFIG_FILE else run_dir.read_dataset_info)(model_dir)


def _image_folder(root, corrupt=None):
  rng = np.random.default_rng(0)
  for name in ("ant", "bee"):
    os.makedirs(os.path.join(root, name))
    for index in range(2):
      path = os.path.join(root, name, f"{index}.png")
      if (name, index) == corrupt:
        with open(path, "wb") as f:
          f.write(b"\x89PNG\r\n\x1a\n truncated")
      else:
        PIL.Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(path)


def test_corrupt_image_met_during_training_is_named(tmp_path):
  # A file that goes bad after the check before step 0 fails inside a
  # compiled chunk, where TensorFlow does not know the file name: train.py
  # then looks for it with the pipeline's decoder.
  root = str(tmp_path / "images")
  _image_folder(root, corrupt=("bee", 1))
  found = folder.find_undecodable_image(f"folder:{root}")
  assert isinstance(found, data.DataError)
  assert str(found).startswith(f"{root}/bee/1.png: cannot be read as an image by TensorFlow")
  _image_folder(str(tmp_path / "good"))
  good = f"folder:{tmp_path / 'good'}"
  assert folder.find_undecodable_image(good) is None


def test_export_replaces_the_previous_one_whole(tmp_path, base_run):
  generator, _, _ = run_dir.load_generator(base_run, use_ema=False)
  model_dir = str(tmp_path)
  path = os.path.join(model_dir, run_dir.SAVED_MODEL_DIR)
  # What a kill mid-export leaves, next to an older export.
  os.makedirs(path + ".partial")
  config = dataclasses.replace(tiny_config(), data=configs.DataConfig(dataset="animal_mnist"))
  info = types.SimpleNamespace(class_names=("a", "b", "c"))
  for step in (3, 5):
    stand_in = types.SimpleNamespace(sample_generator=generator, step=tf.constant(step))
    assert train_lib.export_run(stand_in, model_dir, info, config) == path
    assert export.read_metadata(path)["step"] == step
  assert sorted(os.listdir(model_dir)) == [run_dir.SAVED_MODEL_DIR]
