"""Starts train.py, evaluate.py and other repository scripts as child processes, fast.

Every child is its own process with its own argv, environment, working
folder, stdio and resource limits, and runs the script as `python script.py`
would (`__main__`, sys.argv, sys.path[0]). What it skips is the interpreter
start and the imports of TensorFlow, Keras and TFDS (4-5 s of CPU each): a
fork server per pytest worker imports them once, without starting the
TensorFlow runtime, and forks a child per launch. No device, thread pool or
session exists before the fork, so the child configures logical CPUs,
strategies and clusters as a fresh process does.

What a fork cannot give, a real interpreter is used for: the launch falls
back to subprocess when `fresh=True`, for commands that are not
`python <script> ...`, when the settings read at import (IMPORT_TIME_ENV)
come in more combinations than MAX_SERVERS, and unless TF_CPP_MIN_LOG_LEVEL
is 3. Below 3 a fresh process shows the C++ lines TensorFlow logs while it
loads only through sagan_tf.console's capture of that import; a forked child
would log some of them (cuInit) later, outside the capture. console_test,
packaging_test and readme_test run real interpreters throughout, so start-up
itself stays tested.
"""

import atexit
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

# Settings read when the interpreter starts or TensorFlow, Keras or TFDS are
# imported: one fork server per combination of their values (at most
# MAX_SERVERS; beyond that a real interpreter).
IMPORT_TIME_ENV = ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL", "TF_CPP_VMODULE",
                   "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND", "KERAS_HOME", "TFDS_DATA_DIR",
                   "PYTHONHASHSEED", "PYTHONWARNINGS")
MAX_SERVERS = 3
PRELOAD = ("numpy", "tensorflow", "keras", "tensorflow_datasets", "absl.app", "absl.flags",
           "absl.logging")
_EXIT = struct.Struct("!i")
_server = {}
_server_lock = threading.Lock()


class Process:
  """The part of subprocess.Popen the tests use, for a child of the fork server."""

  def __init__(self, args, conn, pid, stdout, stderr):
    self.args, self.pid, self.stdout, self.stderr = args, pid, stdout, stderr
    self.returncode = None
    self._conn = conn

  def poll(self):
    if self.returncode is None:
      self._conn.setblocking(False)
      try:
        self._read_exit()
      except BlockingIOError:
        pass
    return self.returncode

  def wait(self, timeout=None):
    if self.returncode is None:
      self._conn.settimeout(timeout)
      try:
        self._read_exit()
      except socket.timeout:
        raise subprocess.TimeoutExpired(self.args, timeout) from None
    return self.returncode

  def _read_exit(self):
    data = self._conn.recv(_EXIT.size)
    self.returncode = _EXIT.unpack(data)[0] if data else -signal.SIGKILL
    self._conn.close()

  def send_signal(self, sig):
    if self.returncode is None:
      os.kill(self.pid, sig)

  def terminate(self):
    self.send_signal(signal.SIGTERM)

  def kill(self):
    self.send_signal(signal.SIGKILL)


_SESSION_CACHE = []


def _session_cache():
  """An empty cache folder for this test process's children, made once."""
  if not _SESSION_CACHE:
    path = tempfile.mkdtemp(prefix="sagan_tf_test_cache_")
    _SESSION_CACHE.append(path)
    # Removed by the process that made it, not by forked children exiting.
    atexit.register(lambda pid=os.getpid(): os.getpid() == pid and shutil.rmtree(path, True))
  return _SESSION_CACHE[0]


def child_env(**extra):
  """The environment of a child process: quiet TensorFlow, no inherited weights, devices or cluster.

  SAGAN_TF_INCEPTION or Inception weights in the user's cache would turn
  on the default preset's evaluations, SAGAN_TF_LOGICAL_CPUS split the CPU
  and TF_CONFIG make a worker of the child: a test asks for them in `extra`
  when it means to. SAGAN_TF_CACHE is an empty folder of this session unless
  `extra` names one, so children never read or fill the user's cache.
  """
  values = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                SAGAN_TF_CACHE=_session_cache())
  for name in ("SAGAN_TF_INCEPTION", "SAGAN_TF_LOGICAL_CPUS", "TF_CONFIG"):
    values.pop(name, None)
  values.update({k: str(v) for k, v in extra.items()})
  return values


def popen(args, *, env, cwd=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          file_size_limit=None, fresh=False):
  """Starts `args` ([python, script, flags...]); stdout/stderr: PIPE, STDOUT or a file object.

  Returns a Process (fork server) or a subprocess.Popen (fallback); both
  have text streams for PIPE.
  """
  key = tuple(env.get(name) for name in IMPORT_TIME_ENV)
  if fresh or not _forkable(args, key):
    preexec = (lambda: _limit_file_size(file_size_limit)) if file_size_limit else None
    return subprocess.Popen(  # pylint: disable=consider-using-with
        args, env=env, cwd=cwd, stdout=stdout, stderr=stderr, text=True,
        stdin=subprocess.DEVNULL, preexec_fn=preexec)
  parent_ends, child_fds = [], []
  for target in (stdout, stderr):
    if target is subprocess.PIPE:
      read, write = os.pipe()
      parent_ends.append(os.fdopen(read, "r", encoding="utf-8", errors="replace"))
      child_fds.append(write)
    elif target is subprocess.STDOUT:
      parent_ends.append(None)
      child_fds.append(child_fds[0])
    else:
      parent_ends.append(None)
      child_fds.append(os.dup(target.fileno()))
  request = {"args": list(args), "env": dict(env), "cwd": cwd or os.getcwd(),
             "file_size_limit": file_size_limit}
  conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
  try:
    conn.connect(_server_path(key))
    socket.send_fds(conn, [json.dumps(request).encode()], child_fds)
    pid = int(conn.recv(64).decode())
  finally:
    for fd in set(child_fds):
      os.close(fd)
  return Process(args, conn, pid, *parent_ends)


def run(args, *, env, cwd=None, timeout=None, file_size_limit=None, fresh=False):
  """subprocess.run(args, capture_output=True, text=True) through `popen`."""
  process = popen(args, env=env, cwd=cwd, file_size_limit=file_size_limit, fresh=fresh)
  outputs = {}
  readers = [threading.Thread(target=lambda name=name: outputs.__setitem__(
      name, getattr(process, name).read()), daemon=True) for name in ("stdout", "stderr")]
  for reader in readers:
    reader.start()
  try:
    returncode = process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise
  for reader in readers:
    reader.join()
  return subprocess.CompletedProcess(args, returncode, outputs["stdout"], outputs["stderr"])


def _forkable(args, key):
  with _server_lock:
    room = key in _server or len(_server) < MAX_SERVERS
  quiet = key[IMPORT_TIME_ENV.index("TF_CPP_MIN_LOG_LEVEL")] == "3"
  script = len(args) >= 2 and args[0] == sys.executable and str(args[1]).endswith(".py")
  return quiet and room and script


def _limit_file_size(limit):
  import resource  # pylint: disable=g-import-not-at-top
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _server_path(key):
  """The socket of the fork server for `key`; started on first use, stopped at exit."""
  with _server_lock:
    if key not in _server:
      folder = tempfile.mkdtemp(prefix="sagan_tf_launch_")
      path = os.path.join(folder, "socket")
      server_env = dict(os.environ, PYTHONUNBUFFERED="1")
      for name, value in zip(IMPORT_TIME_ENV, key):
        server_env.pop(name, None)
        if value is not None:
          server_env[name] = value
      process = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, os.path.abspath(__file__), path], env=server_env,
          stdin=subprocess.DEVNULL)
      deadline = time.monotonic() + 120
      while not os.path.exists(path + ".ready"):
        if process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"the fork server did not start (exit status {process.poll()})")
        time.sleep(0.05)
      atexit.register(process.kill)
      _server[key] = path
    return _server[key]


def _serve(path):
  """The fork server: imports PRELOAD, then forks a child for each request on `path`."""
  import importlib  # pylint: disable=g-import-not-at-top
  import select  # pylint: disable=g-import-not-at-top
  for name in PRELOAD:
    importlib.import_module(name)
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
  listener.bind(path)
  listener.listen(64)
  open(path + ".ready", "w").close()
  children = {}
  parent = os.getppid()
  while os.getppid() == parent:
    if select.select([listener], [], [], 0.05)[0]:
      conn, _ = listener.accept()
      message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
      request = json.loads(message)
      sys.stdout.flush()
      sys.stderr.flush()
      pid = os.fork()
      if pid == 0:
        for other in (listener, conn, *children.values()):
          other.close()
        _child(request, fds)
      for fd in fds:
        os.close(fd)
      conn.send(str(pid).encode())
      children[pid] = conn
    _report_exits(children)
  for pid in children:
    os.kill(pid, signal.SIGKILL)


def _report_exits(children):
  while children:
    try:
      pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return
    if pid == 0:
      return
    conn = children.pop(pid, None)
    if conn is not None:
      code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
      try:
        conn.send(_EXIT.pack(code))
      except OSError:
        pass
      conn.close()


def _child(request, fds):
  """In the forked child: stdio, folder, environment and limits of the request, then the script."""
  import io  # pylint: disable=g-import-not-at-top
  import runpy  # pylint: disable=g-import-not-at-top
  import traceback  # pylint: disable=g-import-not-at-top
  code = 1
  try:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in {devnull, *fds}:
      os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["file_size_limit"]:
      _limit_file_size(request["file_size_limit"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    script = os.path.abspath(request["args"][1])
    sys.argv = [request["args"][1], *request["args"][2:]]
    # What a fresh interpreter puts first on sys.path: the script's folder, then PYTHONPATH.
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:1] = [os.path.dirname(script), *extra]
    try:
      runpy.run_path(script, run_name="__main__")
      code = 0
    except SystemExit as stop:
      code = _exit_code(stop.code)
    except KeyboardInterrupt:
      traceback.print_exc()
      code = -signal.SIGINT
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
    # What the interpreter does on its way out: atexit handlers, flushed streams.
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
  finally:
    if code == -signal.SIGINT:
      # Python re-raises an unhandled SIGINT so the parent sees the signal.
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)  # pylint: disable=protected-access


def _exit_code(code):
  if code is None:
    return 0
  if isinstance(code, int):
    return code & 0xFF
  print(code, file=sys.stderr)
  return 1


if __name__ == "__main__":
  _serve(sys.argv[1])
