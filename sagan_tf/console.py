"""A quiet console for sagan_tf's commands: their own lines, not TensorFlow's housekeeping.

train.py, evaluate.py and `python -m sagan_tf.official` call `setup()` before
TensorFlow is imported. By default it keeps out

- TensorFlow's C++ log lines (oneDNN and CUDA notices, "oneDNN supports
  DT_INT32 only on platforms with AVX-512", ...): TF_CPP_MIN_LOG_LEVEL=3,
  unless the variable is already set. The lines TensorFlow writes while it
  loads come before absl::InitializeLog and ignore that variable, so the
  import of `tensorflow` runs with file descriptor 2 captured, and what was
  captured is written back without those log lines;
- the Python `tensorflow` logger below ERROR (savers' "Sharding callback
  duration", exporters' "Assets written to", "Function ... contains input
  name(s) resource");
- Python warnings raised inside TensorFlow, Keras and TensorFlow Datasets.

Our own lines, error lines and the tracebacks of crashes are untouched.
`SAGAN_TF_VERBOSE=1`, or absl's `--verbosity=0` (`-v 0`) or higher on the
command line, turns all of this off.

Only programs call `setup()`: importing sagan_tf changes no logging.
"""

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import warnings

VERBOSE_ENV = "SAGAN_TF_VERBOSE"
# absl's flag (-v); its default, -1, is WARNING. 0 (INFO) or more asks for TensorFlow's lines.
_VERBOSITY_FLAGS = ("--verbosity", "-verbosity", "--v", "-v")
# C++ log lines (absl/glog format "I0000 00:00:1796116171.407509 5136 port.cc:153] ..."), and
# the notice absl prints before the first of them.
_CPP_LOG_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
# Libraries whose log records and warnings are kept out; their ERRORs still show.
_LIBRARIES = ("tensorflow", "keras", "tensorflow_datasets", "tf_keras")
_NOISY_MODULES = rf"({'|'.join(_LIBRARIES)})(\..*)?$"


def verbose_requested(argv=None, environ=None):
  """Whether $SAGAN_TF_VERBOSE or absl's --verbosity/-v in `argv` asks for TensorFlow's lines."""
  argv = sys.argv if argv is None else argv
  environ = os.environ if environ is None else environ
  if environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
    return True
  value = None
  for index, arg in enumerate(argv[1:], start=1):
    name, equals, text = arg.partition("=")
    if name in _VERBOSITY_FLAGS:
      value = text if equals else (argv[index + 1] if index + 1 < len(argv) else None)
  try:
    return value is not None and int(value) >= 0
  except ValueError:
    return False  # absl reports the bad value when it parses the flags


def setup(argv=None):
  """Keeps TensorFlow's lines off the console unless verbose output is asked for.

  Call it before TensorFlow is imported: the C++ log level is read when the
  library loads. Returns True when verbose.
  """
  if verbose_requested(argv):
    return True
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  # TensorFlow also logs through absl's logger, as our own modules do: filter by origin.
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _LibraryRecords) for f in absl_logger.filters):
    absl_logger.addFilter(_LibraryRecords())
  warnings.filterwarnings("ignore", module=_NOISY_MODULES)
  if "tensorflow" not in sys.modules and not any(
      isinstance(finder, _QuietImportFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietImportFinder())
  return False


def is_noise(line):
  """Whether a line written while TensorFlow loads is a C++ log line or absl's preamble.

  C++ ERROR lines there are start-up notices too (cuInit on a machine
  without GPU); a failing import raises a Python exception, which shows.
  """
  return line.startswith(_ABSL_PREAMBLE) or bool(_CPP_LOG_LINE.match(line))


def _in_libraries(path):
  """Whether `path` is a source file of one of the _LIBRARIES that are loaded."""
  for name in _LIBRARIES:
    for directory in getattr(sys.modules.get(name), "__path__", None) or ():
      if path.startswith(os.path.join(directory, "")):
        return True
  return False


class _LibraryRecords(logging.Filter):
  """Drops the log records below ERROR that come from the _LIBRARIES' code."""

  def filter(self, record):
    return record.levelno >= logging.ERROR or not _in_libraries(record.pathname)


@contextlib.contextmanager
def _filtered_stderr():
  """Captures file descriptor 2, then writes back what was captured except `is_noise` lines."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode("utf-8", errors="replace")
      kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Runs the real loader of the `tensorflow` package inside `_filtered_stderr`."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    # The module must look as if the real loader had loaded it.
    module.__loader__ = module.__spec__.loader = self._loader
    with _filtered_stderr():
      self._loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` the usual way and hands it to `_QuietLoader`, once."""

  def find_spec(self, fullname, path, target=None):
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)
    for finder in sys.meta_path:
      spec = getattr(finder, "find_spec", lambda *args: None)(fullname, path, target)
      if spec is not None:
        if spec.loader is not None:
          spec.loader = _QuietLoader(spec.loader)
        return spec
    return None


def fail(program, message, status=2):
  """Exits with `status` after one line on stderr, `<program>: error: <message>`.

  The commands' usage errors (status 2) and failures all end this way.
  """
  print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def flags_parser(program):
  """An absl `flags_parser` for `app.run` that reports bad flags through `fail`.

  absl would exit 1 with its own two-line message; a bad flag value is a
  usage error like any other, in the one-line format of `fail`.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as error:
      fail(program, error)
  return parse


def refuse_arguments(program, argv):
  """Fails on positional arguments: the commands take flags only."""
  if len(argv) > 1:
    fail(program, f"unexpected arguments {argv[1:]}; flags take the form --name=value")
