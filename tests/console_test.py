"""The quiet console (sagan_tf.console): train.py prints its own lines, TensorFlow's on request."""

import os
import re
import subprocess
import sys

import pytest

from sagan_tf import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train.py")
# Exports at the end, so the savers' and exporters' lines would all appear.
TINY = ["--train_steps=2", "--steps_per_loop=2", "--batch_size=4", "--override=model.g_width=8",
        "--override=model.d_width=8", "--override=train.sample_every=100"]
# What TensorFlow writes to a console: C++ log lines (absl format), the absl
# preamble, and the Python loggers' lines (absl format too) of savers and exporters.
NOISE = re.compile(r"oneDNN|cuda|cuInit|^[IWEF]\d{4} |InitializeLog|Sharding callback|"
                   r"Assets written|Writing fingerprint|contains input name\(s\)")


def run_train(model_dir, *args, **env):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("TF_CPP_MIN_LOG_LEVEL", console.VERBOSE_ENV)}
  environ.update(env)
  result = subprocess.run([sys.executable, TRAIN, f"--model_dir={model_dir}", *TINY, *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=environ)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.parametrize("argv, environ, verbose", [
    (["train.py"], {}, False),
    (["train.py", "--verbosity=0"], {}, True),
    (["train.py", "--verbosity", "1"], {}, True),
    (["train.py", "-v", "0"], {}, True),
    (["train.py", "-v=2"], {}, True),
    (["train.py", "--verbosity=-1"], {}, False),
    (["train.py", "--verbosity=x"], {}, False),
    (["train.py", "-v"], {}, False),
    (["train.py", "--train_steps=0"], {}, False),
    (["train.py"], {"SAGAN_TF_VERBOSE": "1"}, True),
    (["train.py"], {"SAGAN_TF_VERBOSE": "0"}, False),
    (["train.py"], {"SAGAN_TF_VERBOSE": ""}, False),
])
def test_verbose_requested(argv, environ, verbose):
  assert console.verbose_requested(argv, environ) is verbose


@pytest.mark.parametrize("line, noise", [
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
     True),
    ("I0000 00:00:1796116171.407509    5136 port.cc:153] oneDNN custom operations are on.\n", True),
    ("E0000 00:00:1796116172.388963    5136 cuda_platform.cc:52] failed call to cuInit\n", True),
    ("train.py: error: --train_steps must be positive\n", False),
    ("Traceback (most recent call last):\n", False),
    ("ImportError: libcudart.so.12: cannot open shared object file\n", False),
])
def test_is_noise(line, noise):
  assert console.is_noise(line) is noise


def test_filtered_stderr_keeps_everything_but_log_lines(capfd):
  with console._filtered_stderr():  # pylint: disable=protected-access
    os.write(2, b"I0000 00:00:1796116171.407509    5136 port.cc:153] oneDNN notice\n")
    os.write(2, b"a real error\n")
    print("python-level warning", file=sys.stderr)
  err = capfd.readouterr().err
  # (pytest's capfd hands Python's sys.stderr writes over separately, so the order differs.)
  assert sorted(err.splitlines()) == ["a real error", "python-level warning"]


@pytest.mark.slow
def test_train_console_shows_only_our_lines(tmp_path):
  result = run_train(tmp_path / "quiet")
  lines = (result.stdout + result.stderr).splitlines()
  assert [line for line in lines if NOISE.search(line)] == []
  # Our lines are all there: config, progress, save, export.
  for expected in ("config:", "step 2/2", "saved checkpoint", "exported the generator"):
    assert any(expected in line for line in lines), expected


@pytest.mark.slow
def test_verbose_switch_brings_tensorflow_lines_back(tmp_path):
  # One end-to-end run: $SAGAN_TF_VERBOSE and the other spellings reach the
  # same console.setup() branch through verbose_requested (tested above).
  result = run_train(tmp_path / "verbose", "--verbosity=0", "--noexport")
  output = result.stdout + result.stderr
  # Every checkpoint save logs this line (absl INFO from TensorFlow's saver).
  assert "Sharding callback duration" in output
  assert "saved checkpoint" in result.stdout
