"""A table of wrong invocations of train.py, evaluate.py and sagan_tf.official, and serving misuse.

Each command row must exit 2 with one line on stderr, `<program>: error: ...`
matching the row's pattern, and leave the run directory it points at as it
was. TensorFlow's runtime start-up lines (see TF_RUNTIME_LINE) are not
counted. Rows that need no TensorFlow fail before importing it, in a tenth
of a second; the others take a few seconds each.
"""

import collections
import fcntl
import json
import os
import re
import shutil
import subprocess
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
from tests.reliability import EVALUATE, REPO, TINY, TRAIN, digests, env, program_lines

CLASS_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
PROGRAMS = {"train": [TRAIN], "evaluate": [EVALUATE],
            "official": ["-m", "sagan_tf.official"]}
PREFIXES = {"train": "train.py: error: ", "evaluate": "evaluate.py: error: ", "official": "error: "}

# program, flags ({name} = a workspace path), regex the error line must match,
# extra environment, workspace entry that must be left unchanged.
Row = collections.namedtuple("Row", "program args pattern env unchanged", defaults=({}, None))

ROWS = {
    # train.py: the data set.
    "unknown_dataset": Row("train", ["--dataset=no_such_dataset_xyz"],
                           r"unknown data set 'no_such_dataset_xyz'"),
    "unknown_tfds_config": Row("train", ["--dataset=lsun/kitchenx", "--data_dir={empty}"],
                               r"data set 'lsun/kitchenx' cannot be loaded from TFDS"),
    "tfds_not_prepared": Row("train", ["--dataset=cifar10", "--data_dir={empty}"],
                             r"data set cifar10 is not prepared in .*empty.*tfds build cifar10"),
    "missing_folder": Row("train", ["--dataset=folder:{root}/nowhere"],
                          r"image folder .*/nowhere does not exist"),
    "folder_is_a_file": Row("train", ["--dataset=folder:{a_file}"],
                            r"image folder .*a_file.txt is a file, not a folder"),
    "folder_names_nothing": Row("train", ["--dataset=folder:"], r"names no folder"),
    "empty_folder": Row("train", ["--dataset=folder:{empty}"], r"has no class sub-folders"),
    "images_not_in_class_folders": Row("train", ["--dataset=folder:{loose}"],
                                       r"has 2 images directly in it"),
    "one_class_folder_conditional": Row("train", ["--dataset=folder:{one_class}"],
                                        r"has a single class; a conditional model needs two"),
    "non_image_files_only": Row("train", ["--dataset=folder:{text_only}"],
                                r"class sub-folder .*/ant has no images with extensions"),
    "split_of_animal_mnist": Row("train", ["--override=data.split=test"],
                                 r"has a single split 'train', got split='test'"),
    "fewer_classes_than_data": Row("train", ["--override=model.num_classes=3"],
                                   r"model.num_classes=3 but animal_mnist has 10 classes"),
    # train.py: images the input pipeline's decoder (tf.io.decode_image) cannot read.
    "corrupt_jpeg": Row("train", ["--dataset=folder:{corrupt}"],
                        r"^train.py: error: .*/corrupt/bee/1.jpg: cannot be read as an image by "
                        r"TensorFlow \(InvalidArgumentError: .*\); fix or remove it, or set "
                        r"data.skip_bad_images=true"),
    "empty_image_file": Row("train", ["--dataset=folder:{bad_empty}"],
                            r"bad_empty/bee/1.jpg: cannot be read as an image by TensorFlow "
                            r"\(InvalidArgumentError: Input is empty"),
    "text_named_png": Row("train", ["--dataset=folder:{bad_text}"],
                          r"bad_text/bee/1.png: .*Unknown image file format"),
    "tiff_named_png": Row("train", ["--dataset=folder:{bad_tiff}"],
                          r"bad_tiff/bee/1.png: .*Unknown image file format"),
    "truncated_jpeg": Row("train", ["--dataset=folder:{bad_truncated}"],
                          r"bad_truncated/bee/1.jpg: .*Invalid JPEG data"),
    "dangling_link": Row("train", ["--dataset=folder:{bad_link}"],
                         r"bad_link/bee/1.jpg: .*NotFoundError: .*No such file or directory"),
    "several_bad_images_counted": Row("train", ["--dataset=folder:{bad_several}"],
                                      r"bad_several/ant/1.jpg: .*\(2 more such files\)"),
    "all_images_of_a_class_skipped": Row(
        "train", ["--dataset=folder:{bad_whole_class}", "--override=data.skip_bad_images=true"],
        r"class sub-folder .*bad_whole_class/bee has no image TensorFlow can decode"),
    # train.py: sizes and values.
    "zero_batch": Row("train", ["--batch_size=0"], r"train.batch_size must be positive, got 0"),
    "negative_batch": Row("train", ["--batch_size=-8"], r"train.batch_size must be positive"),
    "zero_train_steps": Row("train", ["--train_steps=0"], r"train.train_steps must be positive"),
    "zero_width": Row("train", ["--override=model.g_width=0"], r"model.g_width must be positive"),
    "negative_d_width": Row("train", ["--override=model.d_width=-4"],
                            r"model.d_width must be positive"),
    "resolution_48": Row("train", ["--override=model.image_size=48"],
                         r"model.image_size must be one of \(32, 64, 128, 256\), got 48"),
    "negative_resolution": Row("train", ["--override=model.image_size=-32"],
                               r"model.image_size must be one of"),
    "zero_d_steps": Row("train", ["--d_steps=0"], r"train.d_steps must be positive, got 0"),
    "ema_decay_above_one": Row("train", ["--ema_decay=1.5"], r"train.ema_decay must be in \[0, 1\)"),
    "mixed_precision_int8": Row("train", ["--mixed_precision=int8"],
                                r"flag --mixed_precision=int8: value should be one of"),
    "non_integer_steps": Row("train", ["--train_steps=abc"], r"flag --train_steps=abc: invalid"),
    "negative_max_rollbacks": Row("train", ["--max_rollbacks=-1"], r"--max_rollbacks must be >= 0"),
    "unknown_on_nan": Row("train", ["--on_nan=retry"], r"flag --on_nan=retry: value should be one"),
    "unknown_preset": Row("train", ["--preset=huge"], r"unknown --preset='huge'"),
    # train.py: any numeric config field, non-finite or out of its range
    # (tests/configs/experiment_test.py goes through every field).
    "infinite_bn_epsilon": Row("train", ["--override=model.bn_epsilon=inf"],
                               r"model.bn_epsilon must be a finite number, got inf"),
    "nan_learning_rate": Row("train", ["--override=optimizer.g_learning_rate=nan"],
                             r"optimizer.g_learning_rate must be a finite number, got nan"),
    "nan_ema_decay_flag": Row("train", ["--ema_decay=nan"],
                              r"--ema_decay=nan: train.ema_decay must be a finite number"),
    "momentum_above_one": Row("train", ["--override=model.cbn_momentum=1.5"],
                              r"model.cbn_momentum must be in \[0, 1\), got 1.5"),
    "absurd_width": Row("train", ["--override=model.g_width=1000000"],
                        r"model.g_width must be at most 4096, got 1000000"),
    "negative_epsilon": Row("train", ["--override=optimizer.epsilon=-1e-8"],
                            r"optimizer.epsilon must be positive"),
    "negative_seed": Row("train", ["--seed=-1"],
                         r"--seed=-1: runtime.seed must be in \[0, 4294967295\], got -1"),
    "seed_too_large": Row("train", ["--seed=4294967296"], r"runtime.seed must be in"),
    "config_file_infinity": Row("train", ["--config_file={infinity_json}"],
                                r"optimizer.epsilon must be a finite number, got inf"),
    "config_file_nested_deeply": Row("train", ["--config_file={nested_json}"],
                                     r"cannot read --config_file=.*nested.json: nested too deeply"),
    "config_json_wrong_type": Row("train", ["--model_dir={wrong_type_config}"],
                                  r"config.json is not a valid config: model.g_width must be an "
                                  r"integer, got '8'", unchanged="wrong_type_config"),
    # train.py: overrides and config files.
    "override_without_value": Row("train", ["--override=model.g_width"],
                                  r"override 'model.g_width' is not of the form section.key=value"),
    "override_without_section": Row("train", ["--override=g_width=8"],
                                    r"override key 'g_width' must name a section"),
    "unknown_override_section": Row("train", ["--override=modle.g_width=8"],
                                    r"unknown section 'modle'"),
    "unknown_override_key": Row("train", ["--override=model.g_widht=8"],
                                r"unknown key 'g_widht'"),
    "override_wrong_type": Row("train", ["--override=model.g_width=wide"],
                               r"override model.g_width='wide': expected an integer"),
    "override_wrong_bool": Row("train", ["--override=runtime.deterministic=maybe"],
                               r"expected a boolean"),
    "config_file_missing": Row("train", ["--config_file={root}/none.json"],
                               r"cannot read --config_file=.*none.json"),
    "config_file_garbled": Row("train", ["--config_file={garbled_json}"],
                               r"cannot read --config_file=.*garbled.json: Expecting"),
    "config_file_not_an_object": Row("train", ["--config_file={list_json}"],
                                     r"expected a JSON object of sections, got list"),
    "positional_argument": Row("train", ["runs/x"], r"unexpected arguments \['runs/x'\]"),
    # train.py: devices.
    "unknown_strategy": Row("train", ["--strategy=gpus"], r"flag --strategy=gpus: value should be"),
    "tpu_without_address": Row("train", ["--strategy=tpu"], r"--strategy=tpu needs --tpu"),
    "tpu_unreachable": Row("train", ["--strategy=tpu", "--tpu=grpc://127.0.0.1:1"],
                           r"cannot reach TPU grpc://127.0.0.1:1: Connection refused"),
    "multi_worker_without_cluster": Row("train", ["--strategy=multi_worker"],
                                        r"needs the cluster in the TF_CONFIG"),
    "multi_worker_garbled_cluster": Row("train", ["--strategy=multi_worker"],
                                        r"TF_CONFIG is not valid JSON", {"TF_CONFIG": "cluster: ["}),
    "bad_logical_cpus": Row("train", [], r"SAGAN_TF_LOGICAL_CPUS='two'",
                            {"SAGAN_TF_LOGICAL_CPUS": "two"}),
    "batch_not_divisible_over_replicas": Row(
        "train", ["--strategy=mirrored", "--batch_size=3", "--override=model.g_width=8",
                  "--override=model.d_width=8"],
        r"batch size 3 does not divide over 2 replicas", {"SAGAN_TF_LOGICAL_CPUS": "2"}),
    # train.py: the run directory.
    "model_dir_under_a_file": Row("train", ["--model_dir={a_file}/sub"],
                                  r"--model_dir=.*a_file.txt/sub cannot be created: .* is a file"),
    "model_dir_is_a_file": Row("train", ["--model_dir={a_file}"], r"is a file, not a directory"),
    "model_dir_empty": Row("train", ["--model_dir="], r"--model_dir is empty"),
    "model_dir_blank": Row("train", ["--model_dir=  "], r"--model_dir is empty"),
    "model_dir_s3_without_plugin": Row("train", ["--model_dir=s3://bucket/runs/x"],
                                       r"--model_dir=s3://bucket/runs/x: this TensorFlow has no "
                                       r"file system for s3://.*tensorflow-io"),
    "model_dir_unknown_scheme": Row("train", ["--model_dir=foo://x/y"],
                                    r"no file system for foo://"),
    "model_dir_malformed_url": Row("train", ["--model_dir=://runs/x"], r"is not a valid URL"),
    "model_dir_url_without_path": Row("train", ["--model_dir=gs://"], r"is not a valid URL"),
    "resume_with_other_shapes": Row("train", ["--model_dir={run}", "--override=model.g_width=16"],
                                    r"holds a run with another configuration \(.*model.g_width: "
                                    r"saved 8, now 16", unchanged="run"),
    "resume_with_other_data": Row("train", ["--model_dir={run}", "--dataset=cifar10"],
                                  r"data.dataset: saved 'animal_mnist', now 'cifar10'",
                                  unchanged="run"),
    "resume_with_renamed_classes": Row(
        "train", ["--model_dir={renamed_run}", "--dataset=folder:{renamed}"],
        r"renamed_run was trained on other classes \(class names: saved \['ant', 'bee'\], now "
        r"\['ant', 'wasp'\]\): each label would now mean another class", unchanged="renamed_run"),
    "resume_with_reordered_classes": Row(
        "train", ["--model_dir={reordered_run}", "--config_file={reordered_run}/config.json"],
        r"class names: saved \['bird', 'bear', .*\], now \['bear', 'bird', ",
        unchanged="reordered_run"),
    "resume_with_float16": Row("train", ["--model_dir={run}", "--config_file={run}/config.json",
                                         "--mixed_precision=float16"],
                               r"configuration \(runtime.mixed_precision: saved 'float32', now "
                               r"'float16'\); these cannot change on resume", unchanged="run"),
    "garbled_config_json": Row("train", ["--model_dir={garbled_config}"],
                               r"garbled_config/config.json is not a valid config",
                               unchanged="garbled_config"),
    "run_dir_in_use": Row("train", ["--model_dir={locked}", "--train_steps=2"],
                          r"another train.py \(pid \d+\) is training in .*locked", unchanged="locked"),
    # evaluate.py.
    "neither_checkpoint_nor_saved_model": Row("evaluate", [], r"exactly one of --checkpoint"),
    "both_checkpoint_and_saved_model": Row(
        "evaluate", ["--checkpoint={run}", "--saved_model={run}/saved_model"],
        r"exactly one of --checkpoint"),
    "unknown_metric": Row("evaluate", ["--checkpoint={run}", "--metrics=fid,fjd"],
                          r"unknown --metrics \['fjd'\]"),
    "evaluate_missing_run": Row("evaluate", ["--checkpoint={root}/nowhere"], r"no such directory"),
    "evaluate_not_a_run": Row("evaluate", ["--checkpoint={empty}"], r"config.json not found"),
    "evaluate_zero_samples": Row("evaluate", ["--checkpoint={run}", "--num_samples=0"],
                                 r"--num_samples must be positive"),
    "evaluate_non_integer_flag": Row("evaluate", ["--checkpoint={run}", "--num_samples=many"],
                                     r"flag --num_samples=many: invalid"),
    "evaluate_missing_real_folder": Row(
        "evaluate", ["--checkpoint={run}", "--metrics=fid", "--inception_standin=8",
                     "--dataset=folder:{root}/nowhere"],
        r"--dataset=folder:.*/nowhere: image folder .* does not exist", unchanged="run"),
    "evaluate_real_data_not_prepared": Row(
        "evaluate", ["--checkpoint={run}", "--metrics=fid", "--inception_standin=8",
                     "--num_samples=8", "--dataset=cifar10", "--data_dir={empty}"],
        r"data set cifar10 is not prepared in", unchanged="run"),
    "evaluate_real_folder_with_bad_image": Row(
        "evaluate", ["--checkpoint={run}", "--metrics=kid", "--inception_standin=8",
                     "--num_samples=8", "--dataset=folder:{corrupt}"],
        r"corrupt/bee/1.jpg: cannot be read as an image by TensorFlow", unchanged="run"),
    "evaluate_negative_seed": Row("evaluate", ["--checkpoint={run}", "--seed=-1"],
                                  r"--seed must be in \[0, 4294967295\], got -1"),
    "evaluate_missing_step": Row("evaluate", ["--checkpoint={run}", "--checkpoint_step=7"],
                                 r"no checkpoint for --checkpoint_step=7 .* steps there: \[2\]"),
    "missing_inception_weights": Row("evaluate", ["--checkpoint={run}", "--metrics=fid"],
                                     r"--inception_path", {"SAGAN_TF_CACHE": "{empty}"},
                                     unchanged="run"),
    "truncated_checkpoint": Row(
        "evaluate", ["--checkpoint={truncated_ckpt}", "--metrics=fid", "--inception_standin=8"],
        r"cannot restore the generator from checkpoint .*truncated_ckpt/checkpoints/ckpt-2: ",
        unchanged="truncated_ckpt"),
    "garbled_checkpoint_index": Row(
        "evaluate", ["--checkpoint={garbled_index}", "--metrics=fid", "--inception_standin=8"],
        r"cannot restore the generator from checkpoint .*garbled_index/checkpoints/ckpt-2: ",
        unchanged="garbled_index"),
    "garbled_dataset_json": Row(
        "evaluate", ["--checkpoint={garbled_dataset}", "--metrics=fid", "--inception_standin=8"],
        r"garbled_dataset/dataset.json is not a valid data set description",
        unchanged="garbled_dataset"),
    "garbled_saved_model_pb": Row(
        "evaluate", ["--saved_model={garbled_pb}", "--metrics=fid", "--inception_standin=8"],
        r"cannot load the SavedModel at .*garbled_pb \(corrupt or incomplete\?\).*saved_model.pb",
        unchanged="garbled_pb"),
    "truncated_saved_model_variables": Row(
        "evaluate", ["--saved_model={truncated_sm}", "--metrics=fid", "--inception_standin=8"],
        r"cannot load the SavedModel at .*truncated_sm \(corrupt or incomplete\?\)",
        unchanged="truncated_sm"),
    "garbled_inception_graph": Row(
        "evaluate", ["--checkpoint={run}", "--metrics=fid", "--inception_path={garbled_pb_file}"],
        r"Cannot parse .*garbled.pb as a TF GraphDef", unchanged="run"),
    "garbled_inception_torchscript": Row(
        "evaluate", ["--checkpoint={run}", "--metrics=fid", "--inception_path={garbled_pt}"],
        r"Cannot read TorchScript weights from .*garbled.pt", unchanged="run"),
    "output_dir_under_a_file": Row(
        "evaluate", ["--checkpoint={run}", "--metrics=fid", "--inception_standin=8",
                     "--num_samples=8", "--output_dir={a_file}/eval"],
        r"a_file.txt/eval: (Not a directory|File exists)", unchanged="run"),
    # The official parity fixture.
    "garbled_fixture": Row("official", ["--checkpoint={run}/checkpoints/ckpt-2",
                                        "--verify={garbled_npz}"],
                           r"cannot read --verify file .*garbled.npz"),
    "truncated_fixture_zip": Row("official", ["--checkpoint={run}/checkpoints/ckpt-2",
                                              "--verify={truncated_npz}"],
                                 r"cannot read --verify file .*truncated.npz"),
}
# Rows known to fail, with the reason; empty while every row passes.
XFAIL = {}


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
    result = subprocess.run([sys.executable, *PROGRAMS[row.program], *args], cwd=REPO,
                            env=env(**extra), capture_output=True, text=True, timeout=120,
                            check=False)
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
  result = subprocess.run(
      [sys.executable, TRAIN, f"--dataset=folder:{root}", f"--model_dir={model_dir}",
       "--override=data.skip_bad_images=true", "--train_steps=2", "--override=model.image_size=32",
       *TINY], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300, check=False)
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
