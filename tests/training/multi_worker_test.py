"""Two train.py workers under MultiWorkerMirroredStrategy on localhost: identical weights, one evaluator.

Run as a script, this file is one worker: train.py's main with the given
flags, then this worker's weights saved to an .npz file.
"""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300
FLAGS = ["--strategy=multi_worker", "--train_steps=4", "--steps_per_loop=2", "--batch_size=8",
         "--override=model.g_width=8", "--override=model.d_width=8",
         "--override=train.checkpoint_every=2", "--override=train.sample_every=2",
         "--override=train.summary_every=2", "--override=train.eval_every=2",
         "--override=train.eval_samples=10"]
STANDIN_DIM = 16


def _worker(weights_path, flag_args):
  """train.py's main with `flag_args`; saves the Trainer's weights before and after training."""
  sys.path.insert(0, REPO)
  import train  # pylint: disable=g-import-not-at-top
  from sagan_tf.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  trainers = []

  from tests import standin_inception  # pylint: disable=g-import-not-at-top

  class RecordingTrainer(trainer_lib.Trainer):
    def __init__(self, *args, **kwargs):
      # The tiny stand-in for the Inception network: evaluation without weights files.
      kwargs["feature_network"] = lambda: standin_inception.load_standin(STANDIN_DIM)
      super().__init__(*args, **kwargs)
      self.initial = [v.numpy() for v in self.generator.variables + self.discriminator.variables]
      trainers.append(self)

  # train.main looks the class up in the module when it runs.
  trainer_lib.Trainer = RecordingTrainer
  train.FLAGS(["train.py", *flag_args])
  train.main(["train.py"])
  trainer = trainers[0]
  final = [v.numpy() for v in trainer.generator.variables + trainer.discriminator.variables]
  np.savez(weights_path, step=trainer.step.numpy(), is_chief=trainer.is_chief,
           **{f"initial_{i}": v for i, v in enumerate(trainer.initial)},
           **{f"final_{i}": v for i, v in enumerate(final)})


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _arrays(npz, prefix):
  return [npz[f"{prefix}_{i}"] for i in range(sum(k.startswith(prefix) for k in npz.files))]


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tmp_path):
  from tests import launch  # pylint: disable=g-import-not-at-top  (this file also runs as a script)
  cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
  model_dir = str(tmp_path / "run")
  processes, logs = [], []
  for index in range(2):
    env = launch.child_env(PYTHONPATH=REPO, SAGAN_TF_CACHE=tmp_path / "cache", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    log = open(tmp_path / f"worker_{index}.log", "w")
    logs.append(log)
    # Both workers get the same command line and model_dir, as on a real cluster.
    processes.append(launch.popen(
        [sys.executable, os.path.abspath(__file__), str(tmp_path / f"worker_{index}.npz"),
         f"--model_dir={model_dir}", *FLAGS],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path)))
  try:
    for process in processes:
      process.wait(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    for process in processes:
      process.kill()
    pytest.fail(f"the workers did not finish in {TIMEOUT} s")
  finally:
    for process in processes:
      process.wait()
    for log in logs:
      log.close()
  outputs = [(tmp_path / f"worker_{index}.log").read_text() for index in range(2)]
  for index, process in enumerate(processes):
    assert process.returncode == 0, f"worker {index} failed:\n{outputs[index][-3000:]}"
    assert "step 4/4" in outputs[index]

  chief, other = (np.load(tmp_path / f"worker_{index}.npz") for index in range(2))
  assert bool(chief["is_chief"]) and not bool(other["is_chief"])
  assert int(chief["step"]) == int(other["step"]) == 4
  for a, b in zip(_arrays(chief, "final"), _arrays(other, "final")):
    np.testing.assert_array_equal(a, b)
  moved = [not np.array_equal(a, b) for a, b in zip(_arrays(chief, "final"), _arrays(chief, "initial"))]
  assert sum(moved) > len(moved) // 2

  # One copy of everything in model_dir, written by the chief; the other
  # worker's scratch directory is gone.
  assert "workertemp_1/checkpoints/ckpt-4" in outputs[1]
  assert not glob.glob(os.path.join(model_dir, "workertemp_*"))
  assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == [
      "best", "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001",
      "ckpt-4.index"]
  assert len(os.listdir(os.path.join(model_dir, "train"))) == 1
  assert sorted(os.listdir(os.path.join(model_dir, "samples"))) == [
      f"step_{step:08d}.png" for step in (0, 2, 4)]
  assert [o.count("exported the generator") for o in outputs] == [1, 0]
  _check_one_evaluator(model_dir, outputs)


def _check_one_evaluator(model_dir, outputs):
  """The chief evaluated and wrote; both workers logged its results and chose the same best."""
  from sagan_tf import export  # pylint: disable=g-import-not-at-top
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert [line["step"] for line in lines] == [2, 4]
  best_step = lines[-1]["best_step"]
  assert lines[-1]["best_fid"] == min(line["fid"] for line in lines)
  # "evaluation at step N: fid ... (10 samples, <seconds>": the same values on both workers.
  shown = [[line.split(" samples, ")[0] for line in output.splitlines()
            if line.startswith("evaluation at step ")] for output in outputs]
  assert len(shown[0]) == 2 and shown[0] == shown[1], shown
  best = os.path.join(model_dir, "checkpoints", "best")
  assert sorted(n for n in os.listdir(best) if n.endswith(".index")) == [f"ckpt-{best_step}.index"]
  assert export.read_metadata(os.path.join(model_dir, "saved_model"))["step"] == best_step


if __name__ == "__main__":
  _worker(sys.argv[1], sys.argv[2:])
