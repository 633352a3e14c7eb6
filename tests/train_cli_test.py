"""train.py as a user runs it: a tiny run's whole run directory, and usage errors on bad inputs."""

import json
import os
import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.training import run_dir
from tests import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train.py")
TIMEOUT = 300
TINY = ["--train_steps=4", "--steps_per_loop=2", "--batch_size=8", "--override=model.g_width=8",
        "--override=model.d_width=8", "--override=train.checkpoint_every=2",
        "--override=train.sample_every=2", "--override=train.summary_every=2"]
HAS_EXPORT = os.path.exists(os.path.join(REPO, "sagan_tf", "export.py"))
# Lines TensorFlow's C++ runtime writes to stderr whatever TF_CPP_MIN_LOG_LEVEL
# says (start-up notices, cuInit on a machine without GPU); not train.py's.
TF_RUNTIME_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*)$")


def run_train(*args):
  return launch.run([sys.executable, TRAIN, *args], timeout=TIMEOUT, cwd=REPO,
                    env=launch.child_env())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """(model_dir, completed process) of a 4-step Animal-MNIST run with everything written every 2 steps."""
  model_dir = str(tmp_path_factory.mktemp("cli") / "run")
  result = run_train(f"--model_dir={model_dir}", *TINY, *([] if HAS_EXPORT else ["--noexport"]))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result


@pytest.mark.slow
def test_run_writes_config_and_dataset_info(tiny_run):
  model_dir, result = tiny_run
  config = run_dir.read_config(model_dir)
  assert (config.train.train_steps, config.train.steps_per_loop, config.train.batch_size) == (4, 2, 8)
  assert (config.model.g_width, config.model.d_width, config.model.num_classes) == (8, 8, 10)
  assert config.data.dataset == "animal_mnist"
  # The log prints the same resolved config.
  assert json.loads(result.stdout.split("config:\n", 1)[1].split("\n}\n", 1)[0] + "\n}") == (
      config.to_dict())
  info = run_dir.read_dataset_info(model_dir)
  assert info["name"] == "animal_mnist" and info["num_classes"] == 10
  assert len(info["class_names"]) == 10 and len(set(info["class_names"])) == 10


@pytest.mark.slow
def test_run_writes_checkpoints_at_every_second_step(tiny_run):
  model_dir, _ = tiny_run
  state = tf.train.get_checkpoint_state(os.path.join(model_dir, run_dir.CHECKPOINT_DIR))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-2", "ckpt-4"]
  for path in state.all_model_checkpoint_paths:
    step = tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(step) == int(path.rsplit("-", 1)[1])


@pytest.mark.slow
def test_run_writes_sample_grids(tiny_run):
  model_dir, _ = tiny_run
  names = sorted(os.listdir(os.path.join(model_dir, run_dir.SAMPLE_DIR)))
  assert names == [f"step_{step:08d}.png" for step in (0, 2, 4)]
  grids = []
  for name in names:
    with open(os.path.join(model_dir, run_dir.SAMPLE_DIR, name), "rb") as f:
      grids.append(tf.io.decode_png(f.read()).numpy())
  # 10 classes, one row each, of 8 images of 32 pixels enlarged x3 with 2 pixels of padding,
  # after a 64-pixel margin of class names ("elephant": 7 * 8 + 8).
  assert all(grid.shape == (10 * 98 + 2, 64 + 8 * 98 + 2, 3) for grid in grids)
  first_image = grids[0][2:98, 66:162].astype(np.float64)
  assert first_image.std() > 1.0
  # Fixed z: the grids change only because training changed the generator.
  assert not np.array_equal(grids[0], grids[-1])


def read_events(model_dir):
  """{tag: {step: value}} of every summary in the run's event files."""
  events = {}
  for name in tf.io.gfile.listdir(os.path.join(model_dir, run_dir.SUMMARY_DIR)):
    path = os.path.join(model_dir, run_dir.SUMMARY_DIR, name)
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        events.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
  return events


@pytest.mark.slow
def test_run_writes_tensorboard_summaries(tiny_run):
  model_dir, result = tiny_run
  events = read_events(model_dir)
  for tag in ("losses/d_loss", "losses/g_loss", "losses/d_real", "losses/d_fake",
              "speed/images_per_second"):
    assert sorted(events.get(tag, {})) == [2, 4], tag
  assert [t for t in events if t.startswith("attention_gamma/")], sorted(events)
  assert len([t for t in events if t.startswith("sigma/")]) > 10, sorted(events)
  assert sorted(events["samples"]) == [0, 2, 4]
  # The scalar is the loss the log line reports for the same chunk.
  logged = re.search(r"^step 4/4 .* d_loss (\S+)  g_loss (\S+)", result.stdout, re.M)
  assert float(events["losses/d_loss"][4]) == pytest.approx(float(logged.group(1)), abs=1e-3)
  assert float(events["losses/g_loss"][4]) == pytest.approx(float(logged.group(2)), abs=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_EXPORT, reason="sagan_tf/export.py is not there yet")
def test_run_exports_the_last_checkpoints_generator(tiny_run):
  from sagan_tf import export  # pylint: disable=g-import-not-at-top
  model_dir, _ = tiny_run
  path = os.path.join(model_dir, run_dir.SAVED_MODEL_DIR)
  metadata = export.read_metadata(path)
  assert metadata["step"] == 4 and metadata["num_classes"] == 10
  assert metadata["class_names"] == run_dir.read_dataset_info(model_dir)["class_names"]
  generator, _, step = run_dir.load_generator(model_dir)
  assert step == 4
  z = np.random.default_rng(0).standard_normal((3, generator.z_dim)).astype(np.float32)
  labels = np.array([0, 4, 9])
  served = tf.saved_model.load(path).signatures["serving_default"](
      z=tf.constant(z), labels=tf.constant(labels, tf.int64))["images"].numpy()
  assert served.shape == (3, 32, 32, 3)
  np.testing.assert_allclose(served, generator(z, labels.astype(np.int32), training=False).numpy(),
                             atol=1e-5)


def check_usage_error(result, *fragments):
  """Exit code 2 and, TensorFlow's own start-up lines aside, one 'train.py: error:' line."""
  lines = [line for line in result.stderr.splitlines() if not TF_RUNTIME_LINE.match(line)]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("train.py: error: "), result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0]


def test_unknown_strategy(tmp_path):
  result = run_train(f"--model_dir={tmp_path / 'run'}", "--strategy=gpus")
  check_usage_error(result, "--strategy=gpus", "mirrored")
  assert not os.path.exists(tmp_path / "run")


def test_unknown_override_key(tmp_path):
  result = run_train(f"--model_dir={tmp_path / 'run'}", "--override=model.g_widht=8")
  check_usage_error(result, "model.g_widht", "unknown key 'g_widht'")
  assert not os.path.exists(tmp_path / "run")


def test_fewer_model_classes_than_the_data_has(tmp_path):
  result = run_train(f"--model_dir={tmp_path / 'run'}", "--override=model.num_classes=3")
  check_usage_error(result, "model.num_classes=3", "animal_mnist has 10 classes")


def test_resuming_with_other_model_shapes(tmp_path):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  saved = configs.apply_overrides(configs.PRESETS["animal_mnist"](),
                                  ["model.g_width=8", "model.d_width=8"])
  run_dir.write_json(str(model_dir / run_dir.CONFIG_FILE), saved.to_dict())
  before = (model_dir / run_dir.CONFIG_FILE).read_text()
  result = run_train(f"--model_dir={model_dir}", "--override=model.g_width=16",
                     "--override=model.d_width=8")
  check_usage_error(result, "model.g_width: saved 8, now 16")
  assert (model_dir / run_dir.CONFIG_FILE).read_text() == before
  assert os.listdir(model_dir) == [run_dir.CONFIG_FILE]


@pytest.mark.slow
def test_float16_on_two_replicas_trains_end_to_end(tmp_path):
  # The older-GPU path, as a user runs it: float16 with dynamic loss scaling,
  # MirroredStrategy over two logical CPUs.
  model_dir = str(tmp_path / "run")
  result = launch.run(
      [sys.executable, TRAIN, f"--model_dir={model_dir}", *TINY, "--strategy=mirrored",
       "--mixed_precision=float16", "--noexport"], timeout=TIMEOUT, cwd=REPO,
      env=launch.child_env(SAGAN_TF_LOGICAL_CPUS=2))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "MirroredStrategy with 2 replicas" in result.stdout
  losses = [float(x) for x in re.findall(r"d_loss (\S+)", result.stdout)]
  assert losses and all(np.isfinite(losses))
  reader = tf.train.load_checkpoint(os.path.join(model_dir, run_dir.CHECKPOINT_DIR, "ckpt-4"))
  scales = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "dynamic_scale" in name]
  # Both loss-scale optimizers are checkpointed; their scales are powers of two.
  assert len(scales) == 2
  assert all(float(np.log2(s)).is_integer() for s in scales)
