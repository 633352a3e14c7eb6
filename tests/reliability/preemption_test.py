"""SIGTERM, SIGINT and kill -9 during train.py: a checkpoint on the way out, resumes that lose nothing.

SAGAN_TF_KILL_TRIALS (default 3) sets the number of kill -9 trials; the
report line of the test gives how many restarts resumed cleanly.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from sagan_tf.training import run_dir
from tests import launch
from tests.reliability import REPO, TINY, Run, env
from tests.training import multi_worker_test

STEP_VARIABLE = "step/.ATTRIBUTES/VARIABLE_VALUE"
SAVED = r"saved checkpoint \S+/ckpt-(\d+)"
RESUMED = r"resumed from \S+/ckpt-(\d+) at step (\d+)"


def checkpoint_step(path):
  return int(tf.train.load_checkpoint(path).get_tensor(STEP_VARIABLE))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_chunk_saves_and_exits_zero(sig, tmp_path):
  # A chunk of 1000 steps takes minutes here: the stop must not wait for it.
  model_dir = str(tmp_path / "run")
  run = Run([f"--model_dir={model_dir}", "--train_steps=100000", *TINY,
             "--steps_per_loop=1000", "--override=train.checkpoint_every=1000"])
  run.wait_for(r"^training steps 0-100000")
  time.sleep(2.0)  # Into the first chunk (tracing included).
  sent = time.monotonic()
  run.process.send_signal(sig)
  status = run.finish(timeout=120)
  elapsed = time.monotonic() - sent
  log = run.stdout()
  assert status == 0, log + run.stderr()[-3000:]
  name = signal.Signals(sig).name
  saved = re.search(rf"saved checkpoint (\S+/ckpt-(\d+)) on {name}$", log, re.M)
  stopped = re.search(rf"^stopped by {name} at step (\d+); run the same command to resume", log,
                      re.M)
  assert saved and stopped, log
  step = int(stopped.group(1))
  assert int(saved.group(2)) == step < 1000
  assert checkpoint_step(saved.group(1)) == step
  assert os.path.basename(run_dir.latest_checkpoint(model_dir)) == f"ckpt-{step}"
  # The stop waits for one step, not for the chunk; the rest is the save and the exit.
  assert elapsed < 60, elapsed


@pytest.mark.slow
def test_signal_during_start_up_exits_zero_without_training(tmp_path):
  model_dir = str(tmp_path / "run")
  run = Run([f"--model_dir={model_dir}", "--train_steps=40", *TINY])
  run.wait_for(r"^config:")
  run.process.send_signal(signal.SIGTERM)
  status = run.finish(timeout=120)
  log = run.stdout()
  assert status == 0, log + run.stderr()[-3000:]
  assert re.search(r"^stopped by SIGTERM (before training started|at step 0)", log, re.M), log
  assert not re.search(r"^step \d+/", log, re.M), log


@pytest.mark.slow
def test_kill_9_at_random_times_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
  trials = int(os.environ.get("SAGAN_TF_KILL_TRIALS", "3"))
  total = max(40, 8 * trials)
  rng = random.Random(int(os.environ.get("SAGAN_TF_KILL_SEED", "0")))
  model_dir = str(tmp_path / "run")
  args = [f"--model_dir={model_dir}", f"--train_steps={total}", *TINY]
  last_saved = 0
  report = []
  for trial in range(trials):
    run = Run(args)
    if trial:
      resumed = run.wait_for(RESUMED)
      # A kill -9 loses at most the steps since the last logged checkpoint.
      assert int(resumed.group(2)) >= last_saved, (trial, last_saved, run.stdout())
    # Kill during the first chunks, or right at their start, after a random delay.
    chunks = rng.randint(0, 3)
    if chunks:
      run.wait_for(r"^step \d+/", count=chunks)
    else:
      run.wait_for(r"^training steps")
    time.sleep(rng.uniform(0.0, 0.6))
    run.process.kill()
    run.finish(timeout=60)
    saves = [int(m.group(1)) for m in map(re.compile(SAVED).search, run.lines) if m]
    last_saved = max([last_saved] + saves)
    unreadable = [line for line in run.lines if "cannot be read" in line]
    report.append((trial, last_saved, not unreadable))
    assert not unreadable, run.stdout()
    if last_saved >= total:
      break
  final = Run(args)
  status = final.finish(timeout=300)
  log = final.stdout()
  assert status == 0, log + final.stderr()[-3000:]
  if last_saved:
    resumed = re.search(RESUMED, log)
    assert resumed and int(resumed.group(2)) >= last_saved, log
  assert "cannot be read" not in log, log
  latest = run_dir.latest_checkpoint(model_dir)
  assert os.path.basename(latest) == f"ckpt-{total}" and checkpoint_step(latest) == total
  print(f"kill -9 trials: {len(report)}, resumed cleanly: {sum(ok for *_, ok in report)}, "
        f"last checkpoint per trial: {[saved for _, saved, _ in report]}")


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_both_at_the_same_step(tmp_path):
  # The workers vote between chunks: the one without the signal stops too,
  # at the same step, and both take part in the chief's save.
  ports = multi_worker_test._free_ports(2)  # pylint: disable=protected-access
  cluster = {"worker": [f"localhost:{port}" for port in ports]}
  model_dir = str(tmp_path / "run")
  processes, logs = [], []
  for index in range(2):
    logs.append(tmp_path / f"worker_{index}.log")
    with open(logs[-1], "w") as log:
      processes.append(launch.popen(
          [sys.executable, multi_worker_test.__file__, str(tmp_path / f"worker_{index}.npz"),
           f"--model_dir={model_dir}", "--strategy=multi_worker", "--train_steps=100000", *TINY],
          stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=env(
              PYTHONPATH=REPO, TF_CONFIG=json.dumps(
                  {"cluster": cluster, "task": {"type": "worker", "index": index}}))))
  try:
    deadline = time.monotonic() + 240
    while not re.search(r"^step 4/", logs[1].read_text(), re.M):
      assert time.monotonic() < deadline and processes[1].poll() is None, logs[1].read_text()
      time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    statuses = [process.wait(timeout=120) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  outputs = [log.read_text() for log in logs]
  assert statuses == [0, 0], [output[-3000:] for output in outputs]
  steps = [int(re.search(r"^stopped by \S+( worker)? at step (\d+)", output, re.M).group(2))
           for output in outputs]
  assert steps[0] == steps[1], outputs
  assert "stopped by another worker" in outputs[0] and "stopped by SIGTERM" in outputs[1]
  assert os.path.basename(run_dir.latest_checkpoint(model_dir)) == f"ckpt-{steps[0]}"
  assert checkpoint_step(run_dir.latest_checkpoint(model_dir)) == steps[0]
