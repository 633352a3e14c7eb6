"""Tests for reading TorchScript archives without torch."""

import collections
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from sagan_tf.metrics import torchscript_weights


class _Storage:

  def __init__(self, key, array):
    self.key = key
    self.array = array


class _Tensor:

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride)

  def __reduce__(self):
    storage, offset, size, stride = self.args
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (storage, offset, size, stride, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      float_storage = sys.modules["torch"].FloatStorage
      return ("storage", float_storage, obj.key, "cpu", obj.array.size)
    return None


def _fake_torch_modules(monkeypatch):
  """Registers stand-in `torch` and `__torch__` modules so pickle can name globals."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  scripted = types.ModuleType("__torch__.tiny")

  def _rebuild_tensor_v2(*args):
    return args

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  scripted.Net = type("Net", (), {"__module__": "__torch__.tiny"})
  scripted.Conv = type("Conv", (), {"__module__": "__torch__.tiny"})
  modules = {"torch": torch, "torch._utils": utils, "__torch__": types.ModuleType("__torch__"),
             "__torch__.tiny": scripted}
  for name, module in modules.items():
    monkeypatch.setitem(sys.modules, name, module)
  return scripted


def _write_archive(path, root_factory, storages):
  with pytest.MonkeyPatch.context() as monkeypatch:
    scripted = _fake_torch_modules(monkeypatch)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(root_factory(scripted))
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", buffer.getvalue())
    archive.writestr("archive/code/__torch__/tiny.py", "# code is not read\n")
    for storage in storages:
      archive.writestr(f"archive/data/{storage.key}", storage.array.astype("<f4").tobytes())


def write_tiny_archive(path):
  """Writes a two-module archive: `Net` holding `block`, a `Conv` with two tensors."""
  storage = _Storage("0", np.arange(6, dtype=np.float32))

  def make_root(scripted):
    conv = scripted.Conv()
    # size (3, 2) with strides (1, 3): the transpose of the (2, 3) row-major block.
    conv.weight = _Tensor(storage, 0, (3, 2), (1, 3))
    conv.bias = _Tensor(storage, 4, (2,), (1,))
    conv.stride = 2
    net = scripted.Net()
    net.block = conv
    net.training = False
    return net

  _write_archive(path, make_root, [storage])


def test_reads_modules_tensors_and_attributes(tmp_path):
  path = tmp_path / "tiny.pt"
  write_tiny_archive(path)
  root = torchscript_weights.load_torchscript(path)
  modules = torchscript_weights.flatten_modules(root)
  assert list(modules) == ["", "block"]
  assert root.type_name == "__torch__.tiny.Net"
  conv = modules["block"].attributes
  np.testing.assert_array_equal(conv["weight"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
  np.testing.assert_array_equal(conv["bias"], [4.0, 5.0])
  assert conv["weight"].dtype == np.float32
  assert conv["stride"] == 2


def test_refuses_other_globals(tmp_path):
  class Exploit:

    def __reduce__(self):
      return os.getcwd, ()

  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps(Exploit(), protocol=2))
  with pytest.raises(ValueError, match=r"refusing to load global (posix|nt)\.getcwd"):
    torchscript_weights.load_torchscript(path)


def test_truncated_archive_names_the_file(tmp_path):
  path = tmp_path / "tiny.pt"
  write_tiny_archive(path)
  truncated = tmp_path / "truncated.pt"
  truncated.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  with pytest.raises(ValueError, match="truncated.pt.*truncated or corrupt"):
    torchscript_weights.load_torchscript(truncated)


def test_short_storage_is_an_error(tmp_path):
  storage = _Storage("0", np.arange(6, dtype=np.float32))

  def make_root(scripted):
    net = scripted.Net()
    net.weight = _Tensor(storage, 0, (6,), (1,))
    return net

  path = tmp_path / "short.pt"
  _write_archive(path, make_root, [])
  with zipfile.ZipFile(path, "a") as archive:
    archive.writestr("archive/data/0", b"\0" * 8)
  with pytest.raises(ValueError, match="short.pt.*8 bytes, expected 24"):
    torchscript_weights.load_torchscript(path)
