"""A write that fails (disk full, quota, file too large): one line, nothing partial, resumable.

The failures are real: `RLIMIT_FSIZE` on the train.py child (Python
ignores SIGXFSZ, so a write past the limit fails with EFBIG, in Python and
in TensorFlow's file system alike), and /dev/full (ENOSPC) behind the
temporary file of a write. Both work unprivileged, in CI.
"""

import os
import re
import shutil
import sys

import pytest
import tensorflow as tf

from sagan_tf import storage
from sagan_tf.training import run_dir
from sagan_tf.training import trainer as trainer_lib
from tests import launch
from tests.reliability import EVALUATE, REPO, TINY, TRAIN, constant_batches, digests, env
from tests.reliability import program_lines, tiny_config

pytestmark = pytest.mark.slow


def _train(args, file_size_limit=None, **extra_env):
  return launch.run([sys.executable, TRAIN, *args], cwd=REPO, env=env(**extra_env),
                    file_size_limit=file_size_limit, timeout=300)


def _one_line(result, status=storage.EXIT_WRITE_FAILED):
  lines = program_lines(result.stderr)
  assert result.returncode == status, (result.returncode, result.stderr[-3000:])
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def _leftovers(directory):
  return sorted(os.path.relpath(os.path.join(root, name), directory)
                for root, dirs, files in os.walk(directory) for name in dirs + files
                if name.endswith(("_temp", ".tmp", ".partial")) or ".tmp" in name)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A tiny run trained to step 2 (checkpoint ckpt-2), without export."""
  model_dir = str(tmp_path_factory.mktemp("disk_full") / "run")
  result = _train([f"--model_dir={model_dir}", "--train_steps=2", *TINY])
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
  target = str(tmp_path / "run")
  shutil.copytree(finished_run, target)
  return target


def test_checkpoint_save_past_the_limit_keeps_the_previous_one_and_resumes(run_copy):
  checkpoints = os.path.join(run_copy, run_dir.CHECKPOINT_DIR)
  before = digests(checkpoints)
  args = [f"--model_dir={run_copy}", "--train_steps=4", *TINY]
  # The checkpoint data file (2.4 MB) is the only file over 1 MB.
  line = _one_line(_train(args, file_size_limit=1_000_000))
  assert re.fullmatch(
      rf"train.py: error: cannot write checkpoint ckpt-4 to {re.escape(checkpoints)}: File too "
      rf"large \([\d.]+ [KMGT]?B free\); removed its partial files; the checkpoints are intact "
      rf"\(newest: {re.escape(checkpoints)}/ckpt-2\); free some space and run the same command "
      r"to resume", line), line
  assert digests(checkpoints) == before
  assert _leftovers(run_copy) == []
  # Space is back: the same command resumes from ckpt-2.
  result = _train(args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from {checkpoints}/ckpt-2 at step 2" in result.stdout
  assert run_dir.latest_checkpoint(run_copy) == os.path.join(checkpoints, "ckpt-4")


def test_export_past_the_limit_leaves_no_partial_export(run_copy):
  args = [f"--model_dir={run_copy}", "--train_steps=2", *[a for a in TINY if a != "--noexport"]]
  line = _one_line(_train(args, file_size_limit=100_000))
  assert re.search(rf"cannot write the exported generator to {re.escape(run_copy)}: File too "
                   r"large \(.* free\); removed the partial export; nothing was exported", line), line
  assert not os.path.exists(os.path.join(run_copy, run_dir.SAVED_MODEL_DIR))
  assert _leftovers(run_copy) == []
  result = _train(args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.isfile(os.path.join(run_copy, run_dir.SAVED_MODEL_DIR, "saved_model.pb"))


def test_sample_grid_past_the_limit(tmp_path):
  model_dir = str(tmp_path / "run")
  # The step-0 sample grid (about 150 KB) is the first file over 60 KB.
  line = _one_line(_train([f"--model_dir={model_dir}", "--train_steps=2", *TINY],
                          file_size_limit=60_000))
  samples = os.path.join(model_dir, run_dir.SAMPLE_DIR)
  assert re.search(rf"cannot write sample grid step_00000000.png to {re.escape(samples)}: File "
                   r"too large \(.* free\); the checkpoints are intact \(newest: None\)", line), line
  assert _leftovers(model_dir) == []


def test_config_file_on_a_full_disk_keeps_the_old_one(tmp_path):
  path = str(tmp_path / run_dir.CONFIG_FILE)
  run_dir.write_json(path, {"old": 1})
  os.symlink("/dev/full", path + ".tmp")  # Writes there fail with ENOSPC.
  with pytest.raises(storage.WriteError, match=rf"cannot write config.json to {tmp_path}: "
                     r"(No space left on device|.*ENOSPC.*) \(.* free\)"):
    run_dir.write_json(path, {"new": 2})
  assert not os.path.lexists(path + ".tmp")
  assert run_dir._read_json(path, "config") == {"old": 1}  # pylint: disable=protected-access


def test_summary_write_failure_is_one_write_error(tmp_path, monkeypatch):
  trainer = trainer_lib.Trainer(tiny_config(), str(tmp_path / "run"), constant_batches,
                                log=lambda line: None)

  def full_disk():
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{tmp_path}/run/train/events.out.tfevents.1; No space left on device")

  monkeypatch.setattr(tf.summary, "flush", full_disk)
  writer = tf.summary.create_file_writer(str(tmp_path / "run" / "train"))
  with writer.as_default(), pytest.raises(
      storage.WriteError, match=rf"cannot write summaries to {tmp_path}/run/train: No space left "
      r"on device \(.* free\); the checkpoints are intact"):
    trainer._write_summaries({"d_loss": 1.0}, 2.0)  # pylint: disable=protected-access


def test_evaluate_metrics_file_on_a_full_disk(finished_run, tmp_path):
  output_dir = tmp_path / "eval"
  output_dir.mkdir()
  os.symlink("/dev/full", output_dir / "metrics.json.tmp")
  result = launch.run(
      [sys.executable, EVALUATE, f"--checkpoint={finished_run}", "--metrics=fid",
       "--inception_standin=8", "--num_samples=8", "--nosheets", f"--output_dir={output_dir}"],
      cwd=REPO, env=env(SAGAN_TF_CACHE=str(tmp_path / "cache")), timeout=300)
  # evaluate.py reports progress on stderr; the error is its one last line.
  assert result.returncode == storage.EXIT_WRITE_FAILED, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  line = program_lines(result.stderr)[-1]
  assert re.search(rf"evaluate.py: error: cannot write metrics.json to {output_dir}: No space "
                   r"left on device \(.* free\)", line), line
  assert sorted(os.listdir(output_dir)) == []
