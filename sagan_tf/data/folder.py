"""Image folders laid out as one sub-folder per class: listing, decoding and checking the files."""

import contextlib
import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import tensorflow as tf

from sagan_tf.data.preprocessing import DataError

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Bumped when the check changes, so that older cached scans are not trusted.
_SCAN_VERSION = "decode_image-v1"
# Scans of this process, by `_scan_key`.
_SCANS = {}
_LAYOUT_HINT = "expected <folder>/<class_name>/<image>.jpg|png"


@dataclasses.dataclass(frozen=True)
class FolderListing:
  """The images of a class-folder data set.

  Attributes:
    root: the folder.
    paths: image paths, grouped by class, sorted within each class.
    labels: the class index of each path.
    class_names: sub-folder names in sorted order; label i is `class_names[i]`.
    num_skipped: files skipped for a non-image extension or a leading dot.
  """
  root: str
  paths: tuple
  labels: tuple
  class_names: tuple
  num_skipped: int


def _is_hidden(name):
  # Covers .DS_Store, .git and the "._x.jpg" resource forks macOS writes,
  # which carry image extensions but hold no image.
  return name.startswith(".")


def _is_image(name):
  return name.lower().endswith(IMAGE_EXTENSIONS)


def list_image_folder(root):
  """Lists the images under `root`, one class per sub-folder.

  Images may sit at any depth inside a class sub-folder. Files with other
  extensions, and hidden files and folders, are skipped and counted. Works
  on any path `tf.io.gfile` reads, including gs://.

  Args:
    root: the folder holding one sub-folder per class.

  Returns:
    A `FolderListing`.

  Raises:
    DataError: if `root` is missing, holds images directly instead of in class
      sub-folders, has no sub-folders, or has a sub-folder with no images.
  """
  if not tf.io.gfile.isdir(root):
    raise DataError(f"image folder {root} does not exist or is not a folder ({_LAYOUT_HINT})")
  entries = sorted(name for name in tf.io.gfile.listdir(root) if not _is_hidden(name))
  class_names, loose_images = [], []
  for entry in entries:
    name = entry.rstrip("/")
    if tf.io.gfile.isdir(os.path.join(root, name)):
      class_names.append(name)
    elif _is_image(name):
      loose_images.append(name)
  if loose_images:
    raise DataError(f"image folder {root} has {len(loose_images)} images directly in it (e.g. "
                    f"{loose_images[0]}); put them in one sub-folder per class ({_LAYOUT_HINT})")
  if not class_names:
    raise DataError(f"image folder {root} has no class sub-folders ({_LAYOUT_HINT})")
  paths, labels, num_skipped = [], [], 0
  for label, class_name in enumerate(class_names):
    class_dir = os.path.join(root, class_name)
    class_paths = []
    for directory, subdirs, files in tf.io.gfile.walk(class_dir):
      # Pruning in place stops the walk from entering hidden folders.
      subdirs[:] = [d for d in subdirs if not _is_hidden(d.rstrip("/"))]
      for name in files:
        if _is_image(name) and not _is_hidden(name):
          class_paths.append(os.path.join(directory, name))
        else:
          num_skipped += 1
    if not class_paths:
      raise DataError(f"class sub-folder {class_dir} has no images with extensions "
                      f"{', '.join(IMAGE_EXTENSIONS)}; remove it or add images")
    class_paths.sort()
    paths.extend(class_paths)
    labels.extend([label] * len(class_paths))
  return FolderListing(root=root, paths=tuple(paths), labels=tuple(labels),
                       class_names=tuple(class_names), num_skipped=num_skipped)


def decode_image_file(path):
  """Reads and decodes one image of a folder data set to uint8 RGB: the input pipeline's decoder.

  Args:
    path: a string tensor (or str) naming the file.

  Returns:
    A uint8 `(height, width, 3)` tensor; a GIF gives its first frame.
  """
  image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _failure(path):
  """Why `decode_image_file` fails on `path`, in one line (run eagerly, for the few bad files)."""
  try:
    shape = decode_image_file(path).shape
  except (tf.errors.OpError, ValueError) as error:
    text = (getattr(error, "message", None) or str(error)).strip().splitlines()
    # Eager errors wrap the reason: "{{function_node ...}} <reason> [Op:DecodeImage] name:".
    reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "",
                    text[0] if text else "")
    return f"{type(error).__name__}: {reason or 'cannot be decoded'}"
  if not shape[0] or not shape[1]:
    return f"decodes to an empty image of shape {tuple(shape)}"
  return None


def find_bad_images(paths):
  """The files among `paths` that the input pipeline's decoder cannot read or decode.

  Every file is read and fully decoded by `decode_image_file`, the function
  the pipeline maps, in a parallel tf.data pipeline; a header check would
  miss truncated or garbled image data, which fails the pipeline mid-run.
  Errors drop their element (`ignore_errors`), so the missing indices are
  the bad files, which are then decoded once more, eagerly, for the reason.

  Returns:
    [(path, reason)] in the order of `paths`.
  """
  if not paths:
    return []
  with _quiet_stderr():
    return _find_bad_images(paths)


@contextlib.contextmanager
def _quiet_stderr():
  """Silences file descriptor 2: libjpeg prints its own lines there for every bad JPEG.

  Our one line per scan names the files instead.
  """
  try:
    saved = os.dup(2)
  except OSError:
    yield
    return
  try:
    with open(os.devnull, "wb") as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _find_bad_images(paths):
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), tf.string)).enumerate()
  # The shape is returned so that the decode is not pruned away.
  ds = ds.map(lambda index, path: (index, tf.reduce_prod(tf.shape(decode_image_file(path)))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.ignore_errors().batch(4096)
  good = np.zeros(len(paths), bool)
  for indices, sizes in ds.as_numpy_iterator():
    good[indices] = sizes > 0
  bad = []
  for index in np.flatnonzero(~good):
    reason = _failure(paths[index]) or "cannot be decoded"
    bad.append((paths[index], reason))
  return bad


def cache_root():
  """`$SAGAN_TF_CACHE`, else ~/.cache/sagan_tf (as sagan_tf.evaluation's cache)."""
  return os.environ.get("SAGAN_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "sagan_tf")


def _scan_key(listing):
  """A digest of the listed paths with their sizes and modification times; None if not local."""
  if "://" in listing.root:
    return None
  digest = hashlib.sha256(_SCAN_VERSION.encode())
  for path in listing.paths:
    try:
      stat = os.stat(path)
      digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    except OSError:
      digest.update(f"{path}\0missing\n".encode())
  return digest.hexdigest()


def _cached_scan(listing):
  """`find_bad_images` of the listing, remembered per file list + sizes + mtimes.

  Kept in this process and in `<cache_root()>/image_checks/`, so a restart
  on an unchanged folder of 100k images costs a stat per file instead of
  a decode. A folder whose files change is scanned again.
  """
  key = _scan_key(listing)
  if key is not None and key in _SCANS:
    return _SCANS[key]
  path = os.path.join(cache_root(), "image_checks", f"{key}.json") if key else None
  bad = None
  if path and os.path.isfile(path):
    try:
      with open(path, encoding="utf-8") as f:
        bad = [tuple(item) for item in json.load(f)["bad"]]
    except (OSError, ValueError, KeyError, TypeError):
      bad = None
  if bad is None:
    bad = find_bad_images(listing.paths)
    if path:
      try:  # A cache that cannot be written only costs the next start a scan.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
          json.dump({"root": listing.root, "num_images": len(listing.paths), "bad": bad}, f)
        os.replace(path + ".tmp", path)
      except OSError:
        pass
  if key is not None:
    _SCANS[key] = bad
  return bad


def check_images(listing, skip_bad=False):
  """Checks every listed image with the pipeline's decoder, before any training step.

  Args:
    listing: a `FolderListing`.
    skip_bad: drop the files that fail instead of refusing the folder.

  Returns:
    (listing, bad): the listing without the bad files (unchanged when there
    are none) and [(path, reason)] of the bad files.

  Raises:
    DataError: "<path>: <reason>; ..." for the first bad file (and a count
      of the others) unless `skip_bad`; or, with `skip_bad`, when a class
      is left without images.
  """
  bad = _cached_scan(listing)
  if not bad:
    return listing, []
  if not skip_bad:
    more = f" ({len(bad) - 1} more such files)" if len(bad) > 1 else ""
    raise DataError(f"{bad[0][0]}: cannot be read as an image by TensorFlow ({bad[0][1]}){more}; "
                    "fix or remove it, or set data.skip_bad_images=true to skip such files")
  skipped = {path for path, _ in bad}
  kept = [(p, label) for p, label in zip(listing.paths, listing.labels) if p not in skipped]
  empty = sorted(set(range(len(listing.class_names))) - {label for _, label in kept})
  if empty:
    raise DataError(f"class sub-folder {os.path.join(listing.root, listing.class_names[empty[0]])} "
                    "has no image TensorFlow can decode (data.skip_bad_images=true skipped all)")
  return dataclasses.replace(listing, paths=tuple(p for p, _ in kept),
                             labels=tuple(label for _, label in kept)), bad


def find_undecodable_image(dataset):
  """The DataError naming the images of a folder:/path data set that do not decode now, or None.

  For a file that went bad after the check before step 0: TensorFlow's
  error inside a compiled chunk does not name it.
  """
  listing = list_image_folder(os.path.expanduser(dataset[len(PREFIX):]))
  bad = find_bad_images(listing.paths)
  if not bad:
    return None
  more = f" ({len(bad) - 1} more such files)" if len(bad) > 1 else ""
  return DataError(f"{bad[0][0]}: cannot be read as an image by TensorFlow ({bad[0][1]}){more}")
