"""runtime.mixed_precision="auto": bfloat16 exactly where the devices compute it natively."""

import dataclasses

import pytest
import tensorflow as tf

from sagan_tf import configs
from sagan_tf.training import precision

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 avx512f {extra}
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


def _cpuinfo(tmp_path, extra):
  path = tmp_path / "cpuinfo"
  path.write_text(CPUINFO.format(extra=extra))
  return str(path)


@pytest.mark.parametrize("extra, flags", [
    ("avx512_bf16", ("avx512_bf16",)),
    ("amx_bf16 amx_tile avx512_bf16", ("avx512_bf16", "amx_bf16")),
    ("avx512_vnni", ()),
    # A longer flag that merely contains the name is not the flag.
    ("avx512_bf16x", ()),
])
def test_cpu_flags_are_read_from_cpuinfo(tmp_path, extra, flags):
  assert precision.cpu_bfloat16_flags(_cpuinfo(tmp_path, extra)) == flags


def test_unreadable_cpuinfo_means_no_bfloat16(tmp_path):
  assert precision.cpu_bfloat16_flags(str(tmp_path / "missing")) == ()
  assert precision.resolve_precision("auto", "CPU", str(tmp_path / "missing"))[0] == "float32"


@pytest.mark.parametrize("device, extra, expected", [
    ("CPU", "avx512_bf16", "bfloat16"),
    ("CPU", "avx512_vnni", "float32"),
    ("TPU", "", "bfloat16"),
    ("GPU", "avx512_bf16", "float32"),
])
def test_auto_resolves_by_device(tmp_path, device, extra, expected):
  resolved, reason = precision.resolve_precision("auto", device, _cpuinfo(tmp_path, extra))
  assert resolved == expected and reason.startswith("auto: ")


@pytest.mark.parametrize("given", ["float32", "bfloat16", "float16"])
def test_explicit_precisions_are_kept(tmp_path, given):
  assert precision.resolve_precision(given, "CPU", _cpuinfo(tmp_path, "avx512_bf16")) == (given, "")


def test_config_on_this_machine_follows_its_cpu():
  config = configs.PRESETS["animal_mnist"]()
  config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                   mixed_precision="auto"))
  logs = []
  resolved = precision.resolve_config(config, logs.append, tf.distribute.OneDeviceStrategy("/cpu:0"))
  # Before any strategy exists (train.py), from the visible devices: the same.
  assert precision.resolve_config(config, lambda line: None) == resolved
  native = bool(precision.cpu_bfloat16_flags())
  assert resolved.runtime.mixed_precision == ("bfloat16" if native else "float32")
  assert len(logs) == 1 and logs[0].startswith(
      f"mixed precision: {resolved.runtime.mixed_precision} (auto: this CPU "), logs
  explicit = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                     mixed_precision="float32"))
  assert precision.resolve_config(explicit, logs.append) is explicit and len(logs) == 1
