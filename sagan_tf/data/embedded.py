"""Animal-MNIST, the embedded default data set: 10,000 28x28 animal silhouettes in 10 classes."""

import functools
import gzip
import importlib.resources
import pathlib
import pickle

import numpy as np

from sagan_tf.data.preprocessing import DataError

NAME = "animal_mnist"

# The order of the labels 0..9. The package metadata lists the classes
# alphabetically ("Bear, Bird, Cat, Cow, Dog, Elephant, Giraffe, Horse, Sheep,
# Zebra") without giving the label order; looking at 16 silhouettes of each
# label of animal_label_version_3.gz confirmed that label i shows animal i of
# this alphabetical list (0 bears ... 9 zebras, the only striped class).
CLASS_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
NUM_EXAMPLES = 10000
IMAGE_SIZE = 28
# The silhouettes are white on black: 96% of all border pixels are 0.
BACKGROUND_VALUE = 0

IMAGES_FILE = "animal_data_version_3.gz"
LABELS_FILE = "animal_label_version_3.gz"
_PACKAGE = "animal_mnist"
_PACKAGE_DATA_DIR = ("data", "Animal_MNIST")

# The callables a pickled numpy array needs, taken from numpy itself so that
# both numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`) names resolve.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyArrayUnpickler(pickle.Unpickler):
  """An unpickler that rebuilds plain numpy arrays and refuses every other global.

  Animal-MNIST ships as pickles, and `pickle.load` runs whatever callable a
  pickle names. This unpickler resolves only the numpy callables an array
  pickle uses, so a tampered file fails instead of running code.

  Args:
    file: a binary file object holding the pickle.

  Raises:
    pickle.UnpicklingError: from `load()`, naming the first global the pickle
      asks for that is not a numpy array constructor.
  """

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refused global {module}.{name}: only numpy array pickles may be loaded") from None


def _package_data_dir():
  try:
    root = importlib.resources.files(_PACKAGE)
  except ModuleNotFoundError:
    raise DataError(f"data set {NAME} needs the animal-mnist package: pip install animal-mnist") from None
  return root.joinpath(*_PACKAGE_DATA_DIR)


def _read_array(directory, filename, shape, dtype_kind):
  """Unpickles one gzipped numpy array and checks its shape and dtype kind."""
  path = directory.joinpath(filename)
  try:
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as unzipped:
      array = NumpyArrayUnpickler(unzipped).load()
  except FileNotFoundError:
    raise DataError(f"{NAME} file {path} not found; reinstall it with "
                    "pip install --force-reinstall animal-mnist") from None
  # A truncated or corrupt pickle can fail with almost any exception type.
  except Exception as error:
    raise DataError(f"{NAME} file {path} is corrupt or not a numpy array pickle: "
                    f"{type(error).__name__}: {error}") from error
  if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype.kind != dtype_kind:
    found = (f"array of shape {array.shape} and dtype {array.dtype}"
             if isinstance(array, np.ndarray) else type(array).__name__)
    raise DataError(f"{NAME} file {path} holds a {found}, expected shape {shape} and "
                    f"{'unsigned' if dtype_kind == 'u' else 'signed'} integers")
  return array, path


@functools.lru_cache(maxsize=4)
def _load(directory):
  directory = _package_data_dir() if directory is None else pathlib.Path(directory)
  images, images_path = _read_array(directory, IMAGES_FILE, (NUM_EXAMPLES, IMAGE_SIZE, IMAGE_SIZE), "u")
  labels, labels_path = _read_array(directory, LABELS_FILE, (NUM_EXAMPLES,), "i")
  if images.dtype != np.uint8:
    raise DataError(f"{NAME} file {images_path} holds {images.dtype} pixels, expected uint8")
  if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
    raise DataError(f"{NAME} file {labels_path} has labels outside [0, {len(CLASS_NAMES)})")
  labels = labels.astype(np.int64)
  # The arrays are shared by every caller through the cache.
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def load_animal_mnist(directory=None):
  """Loads Animal-MNIST from the `animal-mnist` package, once per process.

  The files are gzipped pickles; they are read with `NumpyArrayUnpickler`,
  never with `pickle.load`. The returned arrays are cached and read-only.

  Args:
    directory: folder holding `animal_data_version_3.gz` and
      `animal_label_version_3.gz`; None takes the installed package's copy.

  Returns:
    A tuple `(images, labels, class_names)`: uint8 images of shape
    `(10000, 28, 28)`, white silhouettes on black; int64 labels of shape
    `(10000,)` in [0, 10), sorted by class; and the 10 class names.

  Raises:
    DataError: if the package is not installed, or a file is missing, corrupt,
      refers to anything but numpy arrays, or holds arrays of the wrong shape.
  """
  images, labels = _load(None if directory is None else str(directory))
  return images, labels, CLASS_NAMES
