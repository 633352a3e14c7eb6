"""A table of wrong invocations of train.py, evaluate.py and sagan_tf.official, and serving misuse.

The table is bad_input_cases.ROWS. Each command row must exit 2 with one
line on stderr, `<program>: error: ...` matching the row's pattern, and leave
the run directory it points at as it was. TensorFlow's runtime start-up lines
(see TF_RUNTIME_LINE) are not counted. Rows that need no TensorFlow fail
before importing it, in a tenth of a second; the others take a few seconds each.
"""

import fcntl
import json
import os
import re
import shutil
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf import export
from sagan_tf.configs.experiment import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from sagan_tf.models.build import build_from_config
from sagan_tf.training import run_dir
from tests import launch
from tests.reliability import EVALUATE, REPO, TINY, TRAIN, digests, env, program_lines
from tests.reliability.bad_input_cases import ROWS, XFAIL

CLASS_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
PROGRAMS = {"train": [TRAIN], "evaluate": [EVALUATE],
            "official": ["-m", "sagan_tf.official"]}
PREFIXES = {"train": "train.py: error: ", "evaluate": "evaluate.py: error: ", "official": "error: "}


def _write_images(folder, names, rng, corrupt=()):
  os.makedirs(folder, exist_ok=True)
  for name in names:
    path = os.path.join(folder, name)
    if name in corrupt:
      with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    else:
      PIL.Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """Paths the rows use: a run directory with a checkpoint and an export, broken copies, folders."""
  root = str(tmp_path_factory.mktemp("bad_input"))
  paths = {"root": root}

  def path(name):
    paths[name] = os.path.join(root, name)
    return paths[name]

  run = path("run")
  config, paths["generator"] = _trained_run(run)
  _damaged_copies(path, paths, run)
  rng = np.random.default_rng(0)
  _image_folders(path, paths, rng)
  _bad_image_folders(path, rng)
  _changed_runs(path, paths, run, config, rng)
  _files(root, paths)
  return paths


def _trained_run(run):
  """A run directory with config, dataset.json, a step-2 checkpoint and an export; (config, G)."""
  os.makedirs(run)
  config = ExperimentConfig(
      model=ModelConfig(image_size=32, num_classes=10, g_width=8, d_width=8, z_dim=16),
      data=DataConfig(dataset="animal_mnist"), train=TrainConfig(ema_decay=0.0))
  run_dir.write_json(os.path.join(run, run_dir.CONFIG_FILE), config.to_dict())
  run_dir.write_json(os.path.join(run, run_dir.DATASET_FILE),
                     {"name": "animal_mnist", "num_classes": 10, "class_names": CLASS_NAMES})
  generator, discriminator = build_from_config(config.model)
  checkpoint = run_dir.make_checkpoint(generator, discriminator, step=tf.Variable(2, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, os.path.join(run, run_dir.CHECKPOINT_DIR),
                             max_to_keep=3).save(checkpoint_number=2)
  export.export_generator(generator, os.path.join(run, run_dir.SAVED_MODEL_DIR), step=2,
                          class_names=CLASS_NAMES, dataset="animal_mnist")
  return config, generator


def _damaged_copies(path, paths, run):
  """Copies of the run and its export with one file truncated or garbled each."""
  saved_model = os.path.join(run, run_dir.SAVED_MODEL_DIR)
  data_file = os.path.join("checkpoints", "ckpt-2.data-00000-of-00001")
  for name, damage in (
      ("truncated_ckpt", lambda d: os.truncate(os.path.join(d, data_file), 1000)),
      ("garbled_index", lambda d: _garble(os.path.join(d, "checkpoints", "ckpt-2.index"))),
      ("garbled_config", lambda d: _garble(os.path.join(d, run_dir.CONFIG_FILE))),
      ("garbled_dataset", lambda d: _garble(os.path.join(d, run_dir.DATASET_FILE)))):
    shutil.copytree(run, path(name))
    damage(paths[name])
  shutil.copytree(saved_model, path("garbled_pb"))
  _garble(os.path.join(paths["garbled_pb"], "saved_model.pb"))
  shutil.copytree(saved_model, path("truncated_sm"))
  os.truncate(os.path.join(paths["truncated_sm"], "variables", "variables.data-00000-of-00001"), 100)


def _image_folders(path, paths, rng):
  """Folder data sets laid out wrongly: empty, no class folders, one class, no images, corrupt."""
  os.makedirs(path("empty"))
  _write_images(path("loose"), ["a.png", "b.png"], rng)
  _write_images(os.path.join(path("one_class"), "ant"), ["0.png", "1.png"], rng)
  os.makedirs(os.path.join(path("text_only"), "ant"))
  with open(os.path.join(paths["text_only"], "ant", "notes.txt"), "w") as f:
    f.write("no images here\n")
  _write_images(os.path.join(path("corrupt"), "ant"), ["0.png", "1.png"], rng)
  _write_images(os.path.join(paths["corrupt"], "bee"), ["0.png", "1.jpg"], rng, corrupt={"1.jpg"})


def _changed_runs(path, paths, run, config, rng):
  """Runs whose data set or config changed under them, and a directory to lock."""
  renamed_config = configs.apply_overrides(
      configs.preset_for_dataset(f"folder:{path('renamed')}"),
      [f"data.dataset=folder:{paths['renamed']}", "model.num_classes=2"])
  _write_images(os.path.join(paths["renamed"], "ant"), ["0.png", "1.png"], rng)
  _write_images(os.path.join(paths["renamed"], "wasp"), ["0.png", "1.png"], rng)
  os.makedirs(path("renamed_run"))
  run_dir.write_json(os.path.join(paths["renamed_run"], run_dir.CONFIG_FILE),
                     renamed_config.to_dict())
  run_dir.write_json(os.path.join(paths["renamed_run"], run_dir.DATASET_FILE),
                     {"name": renamed_config.data.dataset, "num_classes": 2,
                      "class_names": ["ant", "bee"]})
  shutil.copytree(run, path("reordered_run"))
  run_dir.write_json(os.path.join(paths["reordered_run"], run_dir.DATASET_FILE),
                     {"name": "animal_mnist", "num_classes": 10,
                      "class_names": ["bird", "bear"] + CLASS_NAMES[2:]})
  shutil.copytree(run, path("wrong_type_config"))
  values = config.to_dict()
  values["model"]["g_width"] = "8"
  with open(os.path.join(paths["wrong_type_config"], run_dir.CONFIG_FILE), "w") as f:
    json.dump(values, f)
  os.makedirs(path("locked"))


def _files(root, paths):
  """Single files of the wrong kind or garbled: text, JSON, npz, protobuf, TorchScript."""
  files = {"a_file": ("a_file.txt", b"a file\n"),
           "garbled_json": ("garbled.json", b'{"model": {"g_width": 8,'),
           "list_json": ("list.json", b"[1, 2]"),
           "garbled_npz": ("garbled.npz", os.urandom(2000)),
           "truncated_npz": ("truncated.npz", None),
           "garbled_pb_file": ("garbled.pb", os.urandom(2000)),
           "garbled_pt": ("garbled.pt", b"PK\x03\x04" + os.urandom(200)),
           "infinity_json": ("infinity.json", b'{"optimizer": {"epsilon": Infinity}}'),
           "nested_json": ("nested.json", b'{"model": ' + b"[" * 100000 + b"]" * 100000 + b"}")}
  for name, (filename, content) in files.items():
    target = paths[name] = os.path.join(root, filename)
    if content is None:  # A real .npz cut in half.
      np.savez(target, x=np.zeros(1000))
      os.truncate(target, os.path.getsize(target) // 2)
    else:
      with open(target, "wb") as f:
        f.write(content)


def _bad_image_folders(path, rng):
  """Two-class folders with one file the pipeline's decoder cannot read, one kind per folder."""
  def good(root):
    _write_images(os.path.join(root, "ant"), ["0.png", "1.png"], rng)
    _write_images(os.path.join(root, "bee"), ["0.png"], rng)

  good(path("bad_empty"))
  open(os.path.join(path("bad_empty"), "bee", "1.jpg"), "wb").close()
  good(path("bad_text"))
  with open(os.path.join(path("bad_text"), "bee", "1.png"), "w") as f:
    f.write("not an image\n")
  good(path("bad_tiff"))
  PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
      os.path.join(path("bad_tiff"), "bee", "1.png"), format="TIFF")
  good(path("bad_truncated"))
  jpeg = os.path.join(path("bad_truncated"), "bee", "1.jpg")
  PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(jpeg)
  os.truncate(jpeg, os.path.getsize(jpeg) // 2)
  good(path("bad_link"))
  os.symlink(os.path.join(path("bad_link"), "gone.jpg"),
             os.path.join(path("bad_link"), "bee", "1.jpg"))
  good(path("bad_several"))
  for name in ("ant/1.jpg", "bee/1.jpg", "bee/2.png"):
    open(os.path.join(path("bad_several"), name), "wb").close()
  root = path("bad_whole_class")
  _write_images(os.path.join(root, "ant"), ["0.png", "1.png"], rng)
  os.makedirs(os.path.join(root, "bee"))
  open(os.path.join(root, "bee", "0.jpg"), "wb").close()


def _garble(path):
  with open(path, "r+b") as f:
    size = len(f.read())
    f.seek(0)
    f.write(bytes(np.random.default_rng(1).integers(0, 256, max(size, 64), dtype=np.uint8)))


def _lock(path):
  """Holds the lock train.py takes on a run directory, as a running train.py would."""
  handle = open(os.path.join(path, ".train.lock"), "a+")  # pylint: disable=consider-using-with
  fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  handle.seek(0)
  handle.truncate()
  handle.write(str(os.getpid()))
  handle.flush()
  return handle


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.xfail(
    reason=XFAIL[name], strict=True)) if name in XFAIL else name for name in ROWS])
def test_bad_input_fails_with_one_line(name, workspace):
  row = ROWS[name]
  values = {k: v for k, v in workspace.items() if isinstance(v, str)}
  args = [arg.format(**values) for arg in row.args]
  if row.program == "train" and not any(arg.startswith("--model_dir=") for arg in args):
    args.append(f"--model_dir={workspace['root']}/runs/{name}")
  extra = {k: v.format(**values) for k, v in row.env.items()}
  unchanged = workspace[row.unchanged] if row.unchanged else None
  lock = _lock(workspace["locked"]) if name == "run_dir_in_use" else None
  before = digests(unchanged) if unchanged else None
  model_dir = next((a for a in args if a.startswith("--model_dir=")), "=")[len("--model_dir="):]
  new_dir = model_dir.strip() and "://" not in model_dir and not os.path.exists(
      os.path.join(REPO, model_dir))
  try:
    result = launch.run([sys.executable, *PROGRAMS[row.program], *args], cwd=REPO,
                        env=env(**extra), timeout=120)
  finally:
    if lock is not None:
      lock.close()
  lines = program_lines(result.stderr)
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith(PREFIXES[row.program]), lines[0]
  assert re.search(row.pattern, lines[0]), lines[0]
  if unchanged:
    assert digests(unchanged) == before
  if row.program == "train" and name not in ("run_dir_in_use",):
    # Nothing trained: no checkpoints anywhere the command pointed at.
    assert not os.path.exists(os.path.join(model_dir, run_dir.CHECKPOINT_DIR)) or unchanged
  if row.program == "train" and new_dir:
    # Nor a new run directory (with its lock) that looks like a started run.
    assert not os.path.exists(os.path.join(REPO, model_dir)), os.listdir(
        os.path.join(REPO, model_dir))


@pytest.mark.slow
def test_bad_images_skipped_with_a_count_when_asked(workspace):
  model_dir = os.path.join(workspace["root"], "runs", "skipping")
  root = workspace["bad_several"]
  result = launch.run(
      [sys.executable, TRAIN, f"--dataset=folder:{root}", f"--model_dir={model_dir}",
       "--override=data.skip_bad_images=true", "--train_steps=2", "--override=model.image_size=32",
       *TINY], cwd=REPO, env=env(), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(rf"skipped 3 image\(s\) TensorFlow cannot decode \(data.skip_bad_images=true\), "
                   rf"e.g. {re.escape(root)}/ant/1.jpg: InvalidArgumentError: Input is empty.; "
                   r"training on the other 3", result.stdout), result.stdout[-3000:]
  assert run_dir.latest_checkpoint(model_dir).endswith("ckpt-2")


def test_the_table_is_large_enough():
  assert len(ROWS) >= 90
  assert {row.program for row in ROWS.values()} == set(PROGRAMS)


# Serving misuse: the exported generator checks its inputs in the graph.

@pytest.fixture(scope="module")
def served(workspace):
  generator, _ = export.load_exported(os.path.join(workspace["run"], run_dir.SAVED_MODEL_DIR))
  return generator


def test_label_out_of_range_at_serving(served):
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"labels must be class indices in \[0, 10\)"):
    served(np.zeros((2, 16), np.float32), np.array([1, 99]))


def test_wrong_z_width_at_serving(served):
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must have shape \[batch, 16\]"):
    served(np.zeros((2, 7), np.float32), np.array([1, 2]))
