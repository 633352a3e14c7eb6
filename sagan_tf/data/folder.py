"""Image folders laid out as one sub-folder per class: listing and checking the files."""

import dataclasses
import os

import PIL.Image
import tensorflow as tf

from sagan_tf.data.preprocessing import DataError

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Formats `tf.io.decode_image` reads, as PIL names them.
_DECODABLE_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
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


def check_image_file(path):
  """Checks that `path` is an image `tf.io.decode_image` can decode.

  Args:
    path: the image file.

  Raises:
    DataError: naming the file, if PIL cannot fully decode it or it is in a
      format other than JPEG, PNG, BMP or GIF.
  """
  try:
    with tf.io.gfile.GFile(path, "rb") as f, PIL.Image.open(f) as image:
      image_format = image.format
      # `load` decodes every pixel, so truncated files fail here too.
      image.load()
  except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
    raise DataError(f"image file {path} cannot be decoded: {error}") from None
  if image_format not in _DECODABLE_FORMATS:
    raise DataError(f"image file {path} is a {image_format} image; TensorFlow decodes only "
                    f"{', '.join(_DECODABLE_FORMATS)}: convert it or remove it")


def check_image_files(listing, max_files=5000, sample_size=200):
  """Runs `check_image_file` on the listed images.

  Args:
    listing: a `FolderListing`.
    max_files: folders with fewer images than this have every file checked.
    sample_size: otherwise, this many evenly spaced files are checked.

  Raises:
    DataError: naming the first file that fails.
  """
  paths = listing.paths
  if len(paths) >= max_files:
    step = len(paths) / sample_size
    paths = [paths[int(i * step)] for i in range(sample_size)]
  for path in paths:
    check_image_file(path)
