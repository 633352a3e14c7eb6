"""Reads tensors and attributes out of a TorchScript archive with numpy, without torch."""

import collections
import pickle
import types
import zipfile

import numpy as np

# Storage classes a TorchScript archive may name; bfloat16 is left out because numpy has no
# such dtype and the Inception file does not use it.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# TorchScript pickles typed lists (e.g. a List[int] padding) through these helpers.
_LIST_BUILDERS = ("build_intlist", "build_doublelist", "build_boollist")


class ScriptModule:
  """Stand-in for a pickled TorchScript module: its class name and attributes.

  Attributes:
    type_name: Qualified TorchScript class name, e.g. `__torch__.inceptionv3.Conv2dLayer`.
    attributes: Dict of the module's pickled attributes (sub-modules, numpy arrays for
      tensors, Python scalars and lists).
  """

  type_name = "__torch__"
  # Read-only default for modules pickled without state.
  attributes = types.MappingProxyType({})

  def __setstate__(self, state):
    self.attributes = dict(state)

  def __repr__(self):
    return f"ScriptModule({self.type_name}, {sorted(self.attributes)})"


class _StorageType:
  """Stand-in for `torch.<X>Storage` that only remembers the element dtype."""

  def __init__(self, name):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
  """Stand-in for `torch._utils._rebuild_tensor_v2`: a strided numpy view, copied."""
  del requires_grad, backward_hooks, metadata
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  # as_strided trusts its arguments, so a crafted file must not steer it outside storage.
  if storage_offset < 0 or len(stride) != len(size) or min(size + stride, default=0) < 0:
    raise pickle.UnpicklingError(
        f"invalid tensor layout: offset {storage_offset}, size {size}, stride {stride}")
  if not size:
    if storage_offset >= storage.size:
      raise pickle.UnpicklingError(f"scalar at offset {storage_offset} overruns its storage")
    return np.array(storage[storage_offset], dtype=storage.dtype)
  if not all(size):
    return np.zeros(size, dtype=storage.dtype)
  itemsize = storage.dtype.itemsize
  last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
  if last >= storage.size:
    raise pickle.UnpicklingError(
        f"tensor of size {size} and stride {stride} at offset {storage_offset} "
        f"overruns its storage of {storage.size} elements")
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size, strides=[st * itemsize for st in stride],
      writeable=False)
  return np.ascontiguousarray(view)


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that admits only TorchScript modules, tensors, storages and OrderedDict."""

  def __init__(self, file, archive, prefix):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._module_classes = {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch.jit._pickle" and name in _LIST_BUILDERS:
      return list
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module.startswith("__torch__"):
      qualified = f"{module}.{name}"
      if qualified not in self._module_classes:
        self._module_classes[qualified] = type(name, (ScriptModule,), {"type_name": qualified})
      return self._module_classes[qualified]
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
    raw = self._archive.read(f"{self._prefix}data/{key}")
    expected = int(numel) * storage_type.dtype.itemsize
    if len(raw) != expected:
      raise pickle.UnpicklingError(
          f"storage data/{key} has {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=storage_type.dtype)


def _archive_prefix(archive):
  """Returns the top folder (with trailing slash) that holds `data.pkl`."""
  candidates = [n[:-len("data.pkl")] for n in archive.namelist()
                if n.endswith("data.pkl") and n.count("/") == 1]
  if len(candidates) != 1:
    raise ValueError("no unique <folder>/data.pkl entry, so this is not a TorchScript archive")
  return candidates[0]


def load_torchscript(path):
  """Unpickles the module tree of a TorchScript archive into numpy stand-ins.

  Only the pickled state is read (parameters, buffers and plain attributes); the
  TorchScript code is not run. Tensors become numpy arrays with their own dtype.

  Args:
    path: Path of a `.pt` file written by `torch.jit.save`.

  Returns:
    The root `ScriptModule`.

  Raises:
    ValueError: If the file is not a readable TorchScript archive (for example a
      truncated download) or names classes outside the admitted set; the message
      names the file.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      prefix = _archive_prefix(archive)
      with archive.open(f"{prefix}data.pkl") as pickled:
        root = _RestrictedUnpickler(pickled, archive, prefix).load()
  except FileNotFoundError:
    raise
  except pickle.UnpicklingError as error:
    raise ValueError(f"Cannot read TorchScript weights from {path}: {error}.") from error
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError, ValueError,
          TypeError, IndexError, OSError) as error:
    raise ValueError(
        f"Cannot read TorchScript weights from {path}: {error}. The file may be truncated "
        "or corrupt; delete it and fetch it again.") from error
  if not isinstance(root, ScriptModule):
    raise ValueError(f"Cannot read TorchScript weights from {path}: the archive root is "
                     f"{type(root).__name__}, not a module")
  return root


def flatten_modules(root):
  """Lists every module of a tree by dotted path.

  Args:
    root: A `ScriptModule`, as returned by `load_torchscript`.

  Returns:
    Dict from dotted path (the root is `""`) to `ScriptModule`, breadth first.
  """
  found = {}
  pending = [("", root)]
  while pending:
    path, module = pending.pop(0)
    found[path] = module
    for name, value in module.attributes.items():
      if isinstance(value, ScriptModule):
        pending.append((f"{path}.{name}" if path else name, value))
  return found
