"""The cache folder shared by the Inception weights, real statistics and classifiers.

Standard library only: `tools/fetch_inception.py` imports it before the
project's dependencies (TensorFlow among them) are installed.
"""

import hashlib
import json
import os
import re

INCEPTION_DIR = "inception"
STATS_DIR = "stats"
CLASSIFIERS_DIR = "classifiers"


def cache_root():
  """`$SAGAN_TF_CACHE`, else ~/.cache/sagan_tf."""
  return os.environ.get("SAGAN_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "sagan_tf")


def cache_dir(name):
  """The folder `name` (e.g. `STATS_DIR`) inside `cache_root()`."""
  return os.path.join(cache_root(), name)


def inception_dir():
  """Where `tools/fetch_inception.py` writes and `metrics.load_inception` looks by default.

  Returns:
    `$SAGAN_TF_CACHE/inception` when `SAGAN_TF_CACHE` is set, else
    `~/.cache/sagan_tf/inception`.
  """
  return cache_dir(INCEPTION_DIR)


def file_sha1(path):
  """Hex SHA-1 of a file, read in 1 MiB blocks."""
  digest = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _slug(text):
  return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[:60] or "x"


def cache_key(*parts):
  """A readable file-name stem plus a hash of every part, so distinct settings never collide."""
  digest = hashlib.sha1(json.dumps([str(p) for p in parts]).encode("utf-8")).hexdigest()[:12]
  return "_".join(_slug(p) for p in parts[:4]) + "_" + digest
