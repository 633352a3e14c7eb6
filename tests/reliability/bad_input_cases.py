"""The table of wrong invocations bad_input_test.py runs: program, flags, expected error line.

Each row names a program (train.py, evaluate.py or sagan_tf.official), its flags
({name} = a path of the test's workspace), the regex its one stderr error line
must match, extra environment, and the workspace entry it must leave unchanged.
"""

import collections

# program, flags ({name} = a workspace path), regex the error line must match,
# extra environment, workspace entry that must be left unchanged.
Row = collections.namedtuple("Row", "program args pattern env unchanged", defaults=({}, None))


def _damaged_copy(flag, name, pattern):
  """An evaluate.py row on the damaged workspace copy `name`, given as --`flag`.

  `flag` is "checkpoint" or "saved_model"; the row must fail with `pattern` and
  leave the copy as it was.
  """
  return Row("evaluate", [f"--{flag}={{{name}}}", "--metrics=fid", "--inception_standin=8"],
             pattern, unchanged=name)


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
    "truncated_checkpoint": _damaged_copy(
        "checkpoint", "truncated_ckpt",
        r"cannot restore the generator from checkpoint .*truncated_ckpt/checkpoints/ckpt-2: "),
    "garbled_checkpoint_index": _damaged_copy(
        "checkpoint", "garbled_index",
        r"cannot restore the generator from checkpoint .*garbled_index/checkpoints/ckpt-2: "),
    "garbled_dataset_json": _damaged_copy(
        "checkpoint", "garbled_dataset",
        r"garbled_dataset/dataset.json is not a valid data set description"),
    "garbled_saved_model_pb": _damaged_copy(
        "saved_model", "garbled_pb",
        r"cannot load the SavedModel at .*garbled_pb \(corrupt or incomplete\?\).*saved_model.pb"),
    "truncated_saved_model_variables": _damaged_copy(
        "saved_model", "truncated_sm",
        r"cannot load the SavedModel at .*truncated_sm \(corrupt or incomplete\?\)"),
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
