"""Write failures (disk full, quota, file too large, read-only) as one-line errors, with clean-up.

Checkpoints, summaries, sample grids, config files, metrics and exports
all go through `writing`: whatever fails (an OSError from Python, an
OpError from TensorFlow's file system), the partial files are removed and
the caller gets one `WriteError` naming what was being written, the
directory and its free space. train.py and evaluate.py exit with
`EXIT_WRITE_FAILED` on it.
"""

import contextlib
import errno
import os
import re
import shutil

# The exit status of train.py and evaluate.py when a file cannot be written.
EXIT_WRITE_FAILED = 4


class WriteError(RuntimeError):
  """A file could not be written; the message is one line, and partial files are gone."""


def _existing_ancestor(path):
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def _human(size):
  for unit in ("bytes", "KB", "MB", "GB", "TB"):
    if size < 1024 or unit == "TB":
      return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
    size /= 1024.0
  return f"{size:.1f} TB"


def free_space(directory):
  """'1.2 GB free' on the file system of `directory` (or of its nearest existing parent)."""
  if "://" in directory:
    return "free space unknown (remote file system)"
  try:
    usage = shutil.disk_usage(_existing_ancestor(directory))
  except OSError:
    return "free space unknown"
  return f"{_human(usage.free)} free"


def describe(error):
  """The reason of a write failure in a few words: 'No space left on device', ..."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  lines = (getattr(error, "message", None) or str(error)).strip().splitlines()
  text = lines[0] if lines else type(error).__name__
  # Eager op errors add "[Op:SaveV2]" and "{{function_node ...}}"; the OS
  # reason comes after the file name.
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "", text)
  return (text.rsplit("; ", 1)[-1] if "; " in text else text) or type(error).__name__


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
_WRITE_REASONS = re.compile(r"No space left on device|Disk quota exceeded|File too large|"
                            r"Read-only file system")


def is_write_failure(error):
  """Whether an OSError or OpError raised outside `writing` is a failed write (disk full, ...)."""
  if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
    return True
  return bool(_WRITE_REASONS.search(str(error))) and "OOM when allocating" not in str(error)


def remove_quietly(path):
  """Deletes a file or folder if it exists; clean-up must never hide the first error."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
      os.remove(path)
  except OSError:
    pass


@contextlib.contextmanager
def writing(what, directory, cleanup=None, advice=""):
  """Turns a failure inside the block into a WriteError, after `cleanup()`.

  Args:
    what: what is being written, e.g. "checkpoint ckpt-400".
    directory: where; its free space goes into the message.
    cleanup: callable that removes the partial files, or None.
    advice: appended to the message, e.g. what is still intact.

  Raises:
    WriteError: on an OSError or a TensorFlow OpError inside the block.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    yield
  except (OSError, tf.errors.OpError) as error:
    if cleanup is not None:
      try:
        cleanup()
      except (OSError, tf.errors.OpError):
        pass
    message = f"cannot write {what} to {directory}: {describe(error)} ({free_space(directory)})"
    raise WriteError(f"{message}; {advice}" if advice else message) from error
