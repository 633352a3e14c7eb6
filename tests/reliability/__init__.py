"""Reliability tests: preemption, kills, NaNs, corrupt files, bad input; shared helpers."""

import hashlib
import os
import queue
import re
import sys
import threading
import time

from tests import launch
# Re-exported for the reliability tests.
from tests.tiny_experiment import NUM_CLASSES, constant_batches, tiny_config  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "train.py")
EVALUATE = os.path.join(REPO, "evaluate.py")
# A 32-pixel, width-8 Animal-MNIST run that checkpoints every chunk of 2 steps.
TINY = ["--steps_per_loop=2", "--batch_size=8", "--override=model.g_width=8",
        "--override=model.d_width=8", "--override=train.checkpoint_every=2",
        "--override=train.sample_every=1000", "--override=train.summary_every=1000", "--noexport"]
# Lines TensorFlow's C++ runtime and absl's Python logging write to stderr
# whatever TF_CPP_MIN_LOG_LEVEL says (start-up notices, cuInit on a machine
# without GPU, the saver's INFO lines); not train.py's or evaluate.py's.
TF_RUNTIME_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*)$")


# The environment of a child process (quiet, no inherited weights or cluster).
env = launch.child_env


def program_lines(stderr):
  """stderr without the TensorFlow runtime lines."""
  return [line for line in stderr.splitlines() if line.strip() and not TF_RUNTIME_LINE.match(line)]


class Run:
  """A train.py child process whose stdout lines are read as they come.

  Args:
    args: train.py flags.
    extra_env: environment variables to add.
  """

  def __init__(self, args, **extra_env):
    self.process = launch.popen([sys.executable, TRAIN, *args], cwd=REPO, env=env(**extra_env))
    self.lines = []
    self._queue = queue.Queue()
    self._stderr = []
    threading.Thread(target=self._pump, args=(self.process.stdout, self._queue.put),
                     daemon=True).start()
    threading.Thread(target=self._pump, args=(self.process.stderr, self._stderr.append),
                     daemon=True).start()

  @staticmethod
  def _pump(stream, put):
    for line in stream:
      put(line.rstrip("\n"))
    put(None)

  def wait_for(self, pattern, timeout=240, count=1):
    """Reads stdout until `count` lines matching `pattern` arrived; returns the last match."""
    regex = re.compile(pattern)
    matches = [m for m in map(regex.search, self.lines) if m]
    deadline = time.monotonic() + timeout
    while len(matches) < count:
      try:
        line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        raise AssertionError(f"no {pattern!r} within {timeout} s; stdout:\n"
                             + "\n".join(self.lines[-30:]) + "\nstderr:\n" + self.stderr()[-3000:])
      if line is None:
        raise AssertionError(f"train.py ended before {pattern!r}; stdout:\n"
                             + "\n".join(self.lines[-30:]) + "\nstderr:\n" + self.stderr()[-3000:])
      self.lines.append(line)
      match = regex.search(line)
      if match:
        matches.append(match)
    return matches[-1]

  def finish(self, timeout=300):
    """Waits for the exit; returns the exit status, with all stdout in `lines`."""
    status = self.process.wait(timeout=timeout)
    while True:
      try:
        line = self._queue.get(timeout=10)
      except queue.Empty:
        break
      if line is None:
        break
      self.lines.append(line)
    return status

  def stdout(self):
    return "\n".join(self.lines)

  def stderr(self):
    return "\n".join(line for line in self._stderr if line is not None)


def digests(directory):
  """{relative path: (size, sha256, mtime_ns)} of every file under `directory`."""
  result = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      stat = os.stat(path)
      result[os.path.relpath(path, directory)] = (stat.st_size, digest, stat.st_mtime_ns)
  return result


# In-process Trainer runs: tiny_config, constant_batches (from tests.tiny_experiment).
