"""tests/launch.py's forked children behave as fresh interpreters, judged against real ones."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests import launch

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    print("argv", sys.argv[1:])
    print("path0", sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
    print("cwd", os.getcwd())
    print("env", os.environ.get("LAUNCH_TEST"), "name", __name__)
    print("to stderr", file=sys.stderr)
    mode = sys.argv[1]
    if mode == "exit3":
        sys.exit(3)
    if mode == "message":
        sys.exit("a message")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    if mode == "big":
        with open("big.bin", "wb") as f:
            try:
                f.write(b"x" * 4096)
                f.flush()
            except OSError as error:
                print("write failed", error.errno)
""")


@pytest.fixture(scope="module")
def script(tmp_path_factory):
  path = tmp_path_factory.mktemp("launch") / "child.py"
  path.write_text(SCRIPT)
  return str(path)


@pytest.mark.parametrize("mode", ["ok", "exit3", "message", "raise", "interrupt", "term", "big"])
def test_forked_child_equals_a_fresh_interpreter(script, mode, tmp_path):
  env = dict(os.environ, LAUNCH_TEST="yes", TF_CPP_MIN_LOG_LEVEL="3")
  results = []
  for fresh in (True, False):
    cwd = tmp_path / ("fresh" if fresh else "forked")
    cwd.mkdir()
    results.append(launch.run([sys.executable, script, mode, "x y"], env=env, cwd=str(cwd),
                              timeout=120, file_size_limit=1024, fresh=fresh))
  real, forked = results
  assert forked.returncode == real.returncode
  assert forked.stdout == real.stdout.replace("fresh", "forked")
  # Tracebacks name the same exception; the frames above the script differ.
  assert forked.stderr.splitlines()[-1:] == real.stderr.splitlines()[-1:]
  assert forked.stderr.splitlines()[0] == "to stderr"


def test_a_forked_child_is_signalled_and_waited_for_like_popen(script, tmp_path):
  sleeper = tmp_path / "sleep.py"
  sleeper.write_text("import time\nprint('ready', flush=True)\ntime.sleep(600)\n")
  # Real interpreters: not `python script.py`, or TensorFlow's C++ lines asked for.
  for args, level in (([sys.executable, "-c", "pass"], "3"), ([sys.executable, str(script)], "2")):
    process = launch.popen(args, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=level))
    assert isinstance(process, subprocess.Popen)
    process.wait(timeout=60)
  process = launch.popen([sys.executable, str(sleeper)],
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert isinstance(process, launch.Process)
  assert process.stdout.readline() == "ready\n"
  assert process.poll() is None
  with pytest.raises(subprocess.TimeoutExpired):
    process.wait(timeout=0.2)
  process.send_signal(signal.SIGKILL)
  assert process.wait(timeout=60) == -signal.SIGKILL
