"""Readable checkpoint names (sagan_tf.training.checkpoints), and run directories written before them."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.models.build import build_from_config
from sagan_tf.training import checkpoints
from sagan_tf.training import run_dir
from sagan_tf.training import trainer as trainer_lib
from sagan_tf.training.optimizers import make_optimizers
from tests.training.trainer_test import constant_batches, state, tiny_config

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
MODELS = ("generator", "discriminator", "ema_generator")
OPTIMIZERS = ("g_optimizer", "d_optimizer")


def make_objects(seed, mixed_precision="float32"):
  """{name: object} as a Trainer holds them, every variable filled with distinct random values."""
  config = tiny_config()
  generator, discriminator = build_from_config(config.model)
  ema_generator, _ = build_from_config(config.model)
  g_optimizer, d_optimizer = make_optimizers(config.optimizer, mixed_precision)
  g_optimizer.build(generator.trainable_variables)
  d_optimizer.build(discriminator.trainable_variables)
  objects = {"generator": generator, "discriminator": discriminator,
             "ema_generator": ema_generator, "g_optimizer": g_optimizer,
             "d_optimizer": d_optimizer, "step": tf.Variable(0, dtype=tf.int64),
             "rng": tf.random.Generator.from_seed(seed)}
  randomize(objects, seed)
  return objects


def randomize(objects, seed):
  """Gives every variable, the step and the RNG state random values."""
  rng = np.random.default_rng(seed)
  for variable in all_variables(objects):
    dtype = tf.as_dtype(variable.dtype)
    if dtype.is_floating:
      variable.assign(rng.normal(size=variable.shape).astype(dtype.as_numpy_dtype))
    else:
      variable.assign(rng.integers(1, 1000, size=variable.shape).astype(dtype.as_numpy_dtype))
  objects["step"].assign(int(rng.integers(1, 1000)))
  objects["rng"].reset_from_seed(int(rng.integers(1, 1000)))


def all_variables(objects):
  return [v for name in MODELS + OPTIMIZERS for v in objects[name].variables]


def values(objects):
  """[(name, value)] of everything a checkpoint holds."""
  items = [(f"{name}:{v.path}", np.array(v.numpy())) for name in MODELS + OPTIMIZERS
           for v in objects[name].variables]
  return items + [("step", objects["step"].numpy()), ("rng", objects["rng"].state.numpy())]


def write_old_layout(objects, path):
  """A checkpoint as run_dir.make_checkpoint wrote it before readable names: the objects themselves."""
  return tf.train.Checkpoint(**objects).write(path)


@pytest.fixture(scope="module")
def new_checkpoint(tmp_path_factory):
  objects = make_objects(seed=1)
  path = run_dir.make_checkpoint(**objects).write(str(tmp_path_factory.mktemp("new") / "ckpt"))
  return objects, path, dict(tf.train.list_variables(path))


def relative(variable, model_name):
  assert variable.path.startswith(model_name + "/")
  return variable.path[len(model_name) + 1:]


def test_every_model_variable_is_named_under_its_model_by_its_keras_path(new_checkpoint):
  objects, path, names = new_checkpoint
  for name in MODELS:
    model = objects[name]
    expected = {f"{name}/{relative(v, model.name)}{VALUE}" for v in model.variables}
    assert len(expected) == len(model.variables)
    saved = {key for key in names if key.startswith(name + "/")}
    assert saved == expected
    # Each name holds its own variable: a kernel is not a bias.
    for variable in model.variables:
      np.testing.assert_array_equal(
          tf.train.load_variable(path, f"{name}/{relative(variable, model.name)}{VALUE}"),
          variable.numpy(), err_msg=variable.path)
  assert any(key.endswith("/kernel" + VALUE) for key in names)


def test_optimizer_slots_are_named_by_their_keras_path(new_checkpoint):
  objects, path, names = new_checkpoint
  for name in OPTIMIZERS:
    optimizer = objects[name]
    expected = {f"{name}/{relative(v, optimizer.name)}{VALUE}" for v in optimizer.variables}
    assert {key for key in names if key.startswith(name + "/")} == expected
    for variable in optimizer.variables:
      np.testing.assert_array_equal(
          tf.train.load_variable(path, f"{name}/{relative(variable, optimizer.name)}{VALUE}"),
          variable.numpy(), err_msg=variable.path)


def test_nothing_else_is_saved(new_checkpoint):
  objects, path, names = new_checkpoint
  others = {key for key in names if not key.startswith(tuple(n + "/" for n in MODELS + OPTIMIZERS))}
  assert others == {"_CHECKPOINTABLE_OBJECT_GRAPH", f"checkpoint_format{VALUE}", f"step{VALUE}",
                    f"rng/_state_var{VALUE}"}
  assert len(names) == len(all_variables(objects)) + len(others)
  assert tf.train.load_variable(path, f"checkpoint_format{VALUE}") == 2


def test_new_checkpoint_restores_every_value(new_checkpoint):
  objects, path, _ = new_checkpoint
  fresh = make_objects(seed=2)
  run_dir.make_checkpoint(**fresh).read(path).assert_existing_objects_matched()
  for (name, expected), (_, restored) in zip(values(objects), values(fresh)):
    np.testing.assert_array_equal(restored, expected, err_msg=name)


def test_old_layout_restores_identical_values(tmp_path):
  old = make_objects(seed=3)
  path = write_old_layout(old, str(tmp_path / "ckpt"))
  names = [name for name, _ in tf.train.list_variables(path)]
  # The old layout, with the names this module exists to fix.
  assert any(name.startswith("g_optimizer/_trainable_variables/") for name in names)
  assert checkpoints.checkpoint_format(path) == 1
  fresh = make_objects(seed=4)
  before = dict(values(fresh))
  run_dir.make_checkpoint(**fresh).restore(path).assert_existing_objects_matched()
  changed = 0
  for (name, expected), (_, restored) in zip(values(old), values(fresh)):
    np.testing.assert_array_equal(restored, expected, err_msg=name)
    changed += not np.array_equal(before[name], expected)
  assert changed == len(before)  # every value came from the checkpoint


def test_trainer_resumes_an_old_run_directory_and_saves_readable_names(tmp_path):
  model_dir = str(tmp_path / "run")
  checkpoint_dir = os.path.join(model_dir, run_dir.CHECKPOINT_DIR)
  old = trainer_lib.Trainer(tiny_config(train_steps=2), model_dir, constant_batches,
                            log=lambda line: None)
  old.train()
  # The run directory as the code before readable names left it.
  shutil.rmtree(checkpoint_dir)
  objects = {"generator": old.generator, "discriminator": old.discriminator,
             "g_optimizer": old.g_optimizer, "d_optimizer": old.d_optimizer,
             "ema_generator": old.ema_generator, "step": old.step, "rng": old.rng}
  tf.train.CheckpointManager(tf.train.Checkpoint(**objects), checkpoint_dir, 3).save(
      checkpoint_number=2)
  resumed = trainer_lib.Trainer(tiny_config(train_steps=4), model_dir, constant_batches,
                                log=lambda line: None)
  fresh = dict(state(resumed))
  assert resumed.restore() == 2
  changed = 0
  for (name, expected), (_, restored) in zip(state(old), state(resumed)):
    np.testing.assert_array_equal(restored, expected, err_msg=name)
    changed += not np.array_equal(fresh[name], expected)
  assert changed > 0.9 * len(fresh)  # the values came from the checkpoint
  resumed.train()
  latest = run_dir.latest_checkpoint(model_dir)
  assert os.path.basename(latest) == "ckpt-4"
  assert checkpoints.checkpoint_format(latest) == 2


def test_load_generator_reads_an_old_run_directory(tmp_path):
  config = tiny_config()
  model_dir = str(tmp_path / "run")
  os.makedirs(os.path.join(model_dir, run_dir.CHECKPOINT_DIR))
  run_dir.write_json(os.path.join(model_dir, run_dir.CONFIG_FILE), config.to_dict())
  old = make_objects(seed=5)
  write_old_layout(old, os.path.join(model_dir, run_dir.CHECKPOINT_DIR, "ckpt-7"))
  for use_ema, name in ((True, "ema_generator"), (False, "generator")):
    generator, _, step = run_dir.load_generator(
        model_dir, use_ema=use_ema,
        checkpoint_path=os.path.join(model_dir, run_dir.CHECKPOINT_DIR, "ckpt-7"))
    assert step == int(old["step"].numpy())
    for variable, expected in zip(generator.variables, old[name].variables):
      np.testing.assert_array_equal(variable.numpy(), expected.numpy(), err_msg=variable.path)


def test_mixed_float16_optimizers_have_unique_names(tmp_path):
  objects = make_objects(seed=6, mixed_precision="float16")
  path = run_dir.make_checkpoint(**objects).write(str(tmp_path / "ckpt"))
  names = dict(tf.train.list_variables(path))
  for name in OPTIMIZERS:
    assert len([key for key in names if key.startswith(name + "/")]) == len(
        {id(v) for v in objects[name].variables})


def test_unbuilt_optimizer_is_refused():
  config = tiny_config()
  generator, _ = build_from_config(config.model)
  g_optimizer, _ = make_optimizers(config.optimizer)
  with pytest.raises(ValueError, match="is not built"):
    run_dir.make_checkpoint(generator, g_optimizer=g_optimizer)
