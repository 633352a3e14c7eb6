"""Tests of evaluate.py end to end on a tiny run directory, and of the sagan_tf.evaluation pieces."""

import io
import json
import math
import os
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from sagan_tf import evaluation
from sagan_tf import export
from sagan_tf import samples
from sagan_tf.configs.experiment import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from sagan_tf.models.build import build_from_config
from sagan_tf.training import run_dir
from tests import launch
from tests import standin_inception

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE = os.path.join(REPO, "evaluate.py")
CLASS_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
# A 64-feature stand-in keeps FID's 2048x2048 matrix square root out of the tests.
STANDIN = "--inception_standin=64"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """A run directory with one checkpoint at step 2 and an exported generator, and a cache folder."""
  root = tmp_path_factory.mktemp("evaluate")
  model_dir = root / "run"
  model_dir.mkdir()
  config = ExperimentConfig(
      model=ModelConfig(image_size=32, num_classes=10, g_width=8, d_width=8, z_dim=16),
      data=DataConfig(dataset="animal_mnist"), train=TrainConfig(ema_decay=0.0))
  run_dir.write_json(str(model_dir / run_dir.CONFIG_FILE), config.to_dict())
  run_dir.write_json(str(model_dir / run_dir.DATASET_FILE),
                     {"name": "animal_mnist", "num_classes": 10, "class_names": CLASS_NAMES})
  generator, discriminator = build_from_config(config.model)
  checkpoint = run_dir.make_checkpoint(generator, discriminator, step=tf.Variable(2, dtype=tf.int64))
  manager = tf.train.CheckpointManager(checkpoint, directory=str(model_dir / run_dir.CHECKPOINT_DIR),
                                       max_to_keep=3)
  manager.save(checkpoint_number=2)
  export.export_generator(generator, str(model_dir / run_dir.SAVED_MODEL_DIR), step=2,
                          class_names=CLASS_NAMES, dataset="animal_mnist")
  cache = root / "cache"
  cache.mkdir()
  return {"root": root, "model_dir": model_dir, "cache": cache}


def _run(args, cache, extra_env=None):
  env = launch.child_env(SAGAN_TF_CACHE=cache, **(extra_env or {}))
  return launch.run([sys.executable, EVALUATE] + args, cwd=REPO, env=env, timeout=300)


def _read_png(path):
  with open(path, "rb") as f:
    image = PIL.Image.open(io.BytesIO(f.read()))
    image.load()
  return np.asarray(image)


def _assert_finite_metrics(report, names):
  assert set(report["metrics"]) == set(names)
  for name in names:
    assert math.isfinite(report["metrics"][name]), (name, report["metrics"][name])


def test_checkpoint_end_to_end(workspace):
  model_dir = workspace["model_dir"]
  result = _run([f"--checkpoint={model_dir}", "--num_samples=64", "--batch_size=32",
                 "--metrics=fid,is,kid,pr,cls", STANDIN, "--is_splits=4", "--kid_subset_size=32",
                 "--cls_train_examples=256", "--cls_epochs=1", "--attention_pixels=8,8;16,24"],
                workspace["cache"])
  assert result.returncode == 0, result.stderr[-4000:]
  output_dir = model_dir / "eval" / "step_2"
  with open(output_dir / "metrics.json") as f:
    report = json.load(f)
  _assert_finite_metrics(report, ["fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision",
                                  "recall", "cls_accuracy", "cls_real_accuracy"])
  assert report["metrics"]["fid"] >= 0 and report["metrics"]["is_mean"] >= 1.0
  assert 0 <= report["metrics"]["precision"] <= 1 and 0 <= report["metrics"]["cls_accuracy"] <= 1
  config = report["config"]
  assert config["num_samples"] == 64 and config["num_real"] == 64 and config["step"] == 2
  assert config["dataset"] == "animal_mnist" and config["split"] == "train"
  assert config["inception"]["source"] == "standin" and "TEST ONLY" in config["inception"]["note"]
  assert config["cls_classifier"]["num_train"] + config["cls_classifier"]["num_heldout"] == 256
  assert os.path.isfile(config["real_statistics"])
  assert config["real_statistics"].startswith(str(workspace["cache"] / "stats"))
  # The table on stdout, the progress on stderr.
  assert "FID" in result.stdout and "class consistency" in result.stdout
  assert "generating: 64/64 images" in result.stderr and "images/s" in result.stderr
  # 32-pixel images are enlarged twice; grids have 2-pixel gaps.
  samples = _read_png(output_dir / "samples.png")
  assert samples.shape == (8 * 66 + 2, 8 * 66 + 2, 3)
  classes = _read_png(output_dir / "classes.png")
  assert classes.shape[0] == 10 * 66 + 2 and classes.shape[1] > 10 * 66
  assert _read_png(output_dir / "interpolation.png").shape == (4 * 66 + 2, 10 * 66 + 2, 3)
  assert _read_png(output_dir / "attention.png").shape == (4 * 66 + 2, 3 * 66 + 2, 3)
  assert sorted(report["sheets"]) == ["attention", "classes", "interpolation", "samples"]


def test_saved_model_end_to_end(workspace):
  out = workspace["root"] / "saved_model_eval"
  result = _run([f"--saved_model={workspace['model_dir'] / 'saved_model'}", f"--output_dir={out}",
                 "--num_samples=48", "--batch_size=20", "--metrics=is,kid,pr", STANDIN,
                 "--is_splits=2", "--kid_subset_size=16", "--truncation=1.0", "--seed=3"],
                workspace["cache"])
  assert result.returncode == 0, result.stderr[-4000:]
  with open(out / "metrics.json") as f:
    report = json.load(f)
  _assert_finite_metrics(report, ["is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall"])
  config = report["config"]
  # The data set comes from the export's metadata.
  assert config["dataset"] == "animal_mnist" and config["step"] == 2 and config["truncation"] == 1.0
  assert config["model"]["saved_model"].endswith("saved_model")
  for name in ("samples", "classes", "interpolation", "attention"):
    assert _read_png(out / f"{name}.png").ndim == 3


# Bad command lines are refused before TensorFlow loads: one line on stderr, exit code 2.
@pytest.mark.parametrize("args, message", [
    ([], "pass exactly one of --checkpoint=RUN_DIR and --saved_model=DIR"),
    (["--checkpoint={run}", "--saved_model={run}/saved_model"], "pass exactly one of"),
    (["--checkpoint={root}/missing"], "missing: no such directory"),
    (["--checkpoint={root}"], "config.json not found, so not a sagan_tf run directory"),
    (["--checkpoint={run}", "--checkpoint_step=99"],
     "no checkpoint for --checkpoint_step=99 in {run}/checkpoints; steps there: [2]"),
    (["--checkpoint={run}", "--checkpoint_step=last"],
     "--checkpoint_step='last' is neither a step number nor 'best'"),
    (["--checkpoint={run}", "--checkpoint_step=best"],
     "--checkpoint_step=best: no checkpoint in {run}/checkpoints/best (the run had no "
     "train.eval_every"),
    (["--saved_model={run}"], "no saved_model.pb, so not a SavedModel"),
    (["--checkpoint={run}", "--metrics=fid,fjd"], "unknown --metrics ['fjd']"),
    (["--checkpoint={run}", "--truncation=-0.5"], "--truncation must be a finite number >= 0"),
    (["--checkpoint={run}", "--attention_pixels=8,8;9"], "--attention_pixels: '9' is not 'y,x'"),
    (["--checkpoint={run}", "--num_samples=5", "--is_splits=10"], "--is_splits=10 exceeds"),
])
def test_bad_flags_fail_with_one_line(workspace, args, message):
  args = [a.format(run=workspace["model_dir"], root=workspace["root"]) for a in args]
  result = _run(args, workspace["cache"])
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  message = message.format(run=workspace["model_dir"])
  assert lines[0].startswith("evaluate.py: error: ") and message in lines[0], lines[0]


def _error_line(result):
  """The one error line; TensorFlow's own start-up lines may come before it, a traceback may not."""
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("evaluate.py: error:")]
  assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
  return errors[0]


def test_library_names_a_missing_checkpoint_step(workspace):
  # The binary checks local paths itself; the library's check covers remote ones and API users.
  with pytest.raises(evaluation.EvaluationError, match=r"--checkpoint_step=5 .*steps there: \[2\]"):
    evaluation.load_sampler(checkpoint=str(workspace["model_dir"]), checkpoint_step=5)
  with pytest.raises(evaluation.EvaluationError, match=r"--checkpoint_step=best: no checkpoint in "):
    evaluation.load_sampler(checkpoint=str(workspace["model_dir"]), checkpoint_step="best")


def test_missing_inception_weights_name_the_remedies(workspace):
  empty = workspace["root"] / "no_weights"
  empty.mkdir(exist_ok=True)
  line = _error_line(_run([f"--checkpoint={workspace['model_dir']}", "--metrics=fid",
                           "--num_samples=8"], empty, {"SAGAN_TF_INCEPTION": str(empty / "x.pt")}))
  assert "--inception_path" in line and "tools/fetch_inception.py" in line


# The library pieces, in process.

def test_sample_noise_truncation_resamples():
  rng = np.random.default_rng(0)
  z = evaluation.sample_noise(rng, 4000, 8, truncation=0.5)
  assert z.dtype == np.float32 and np.abs(z).max() <= 0.5
  # A truncated normal, not a clipped one: no mass piles up at the bounds.
  assert np.mean(np.abs(z) > 0.49) < 0.05
  plain = evaluation.sample_noise(np.random.default_rng(0), 4000, 8)
  assert np.abs(plain).max() > 2.5 and abs(plain.std() - 1.0) < 0.05


def test_balanced_labels():
  labels = evaluation.balanced_labels(np.random.default_rng(0), 103, 10)
  counts = np.bincount(labels, minlength=10)
  assert counts.min() == 10 and counts.max() == 11 and labels.dtype == np.int32
  assert not np.array_equal(labels[:10], np.arange(10))
  assert not evaluation.balanced_labels(np.random.default_rng(0), 5, 0).any()


class _OneHotAttention:
  """A fake sampler whose every query attends to a single pooled key."""

  z_dim, num_classes, image_size, has_attention = 4, 0, 32, True

  def __init__(self, key_y, key_x):
    self.key = (key_y, key_x)

  def generate_with_attention(self, z, labels):
    del labels
    attention = np.zeros((len(z), 16 * 16, 8 * 8), np.float32)
    attention[:, :, self.key[0] * 8 + self.key[1]] = 1.0
    return np.zeros((len(z), 32, 32, 3), np.float32), attention


def test_attention_sheet_puts_the_heat_on_the_attended_key():
  sheet = evaluation.attention_sheet(_OneHotAttention(2, 5), np.zeros((1, 4)), np.zeros(1),
                                     [(4, 4)], scale=1)
  assert sheet.shape == (1 * 34 + 2, 2 * 34 + 2, 3)
  overlay = sheet[2:34, 36:68].astype(np.int64)
  # Pooled key (2, 5) of 8x8 covers image pixels y 8..11, x 20..23; red is hottest there.
  red = overlay[..., 0] - overlay[..., 2]
  y, x = np.unravel_index(np.argmax(red), red.shape)
  assert 7 <= y <= 12 and 19 <= x <= 24
  assert red[28, 2] < red[y, x]
  # The query pixel is outlined in green in both tiles.
  assert tuple(sheet[2 + 2, 2 + 4]) == (0, 255, 0) and tuple(sheet[2 + 2, 36 + 4]) == (0, 255, 0)


def test_image_grid_and_table():
  images = np.zeros((5, 4, 4, 3), np.uint8)
  grid = samples.image_grid(images, columns=3)
  assert grid.shape == (2 * 6 + 2, 3 * 6 + 2, 3) and grid[0, 0, 0] == 255 and grid[2, 2, 0] == 0
  table = evaluation.format_table({"fid": 12.5, "is_mean": 3.0, "is_std": 0.1, "cls_accuracy": 0.5,
                                   "cls_real_accuracy": 0.9})
  assert "FID" in table and "12.5000" in table and "3.0000 +- 0.1000" in table and "0.9000" in table


def test_progress_reports_rate_and_eta():
  stream = io.StringIO()
  progress = evaluation.Progress("generating", 10, stream=stream, interval=0.0)
  progress.update(4)
  progress.update(6)
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith("generating: 4/10 images,")
  assert "images/s" in lines[0] and "ETA" in lines[0]
  assert lines[-1].startswith("generating: 10/10 images") and lines[-1].endswith("ETA 0:00")


def test_real_statistics_are_cached(monkeypatch, tmp_path):
  monkeypatch.setenv("SAGAN_TF_CACHE", str(tmp_path))
  network, info = standin_inception.load_standin(16, batch_size=32)
  logs = []
  kwargs = dict(image_size=32, num_samples=40, batch_size=16, inception=network,
                inception_info=info, need_features=True, log=logs.append)
  first = evaluation.real_statistics("animal_mnist", **kwargs)
  second = evaluation.real_statistics("animal_mnist", **kwargs)
  assert not first["cached"] and second["cached"] and first["num_images"] == 40
  np.testing.assert_allclose(first["mu"], second["mu"])
  np.testing.assert_array_equal(first["pool_3"], second["pool_3"])
  assert first["pool_3"].shape == (40, 16)
  assert any("cached" in line for line in logs)
  assert os.listdir(tmp_path / "stats")


def test_classifier_cache_follows_use_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("SAGAN_TF_CACHE", str(tmp_path))
  logs = []
  kwargs = dict(image_size=32, num_classes=10, train_examples=64, epochs=1, log=logs.append)
  evaluation.load_or_train_classifier("animal_mnist", use_cache=False, **kwargs)
  assert not (tmp_path / "classifiers").exists()
  _, first = evaluation.load_or_train_classifier("animal_mnist", **kwargs)
  _, second = evaluation.load_or_train_classifier("animal_mnist", **kwargs)
  assert os.path.isfile(first["path"]) and second == first
  assert sum("cached classifier" in line for line in logs) == 1
