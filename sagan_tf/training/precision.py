"""`runtime.mixed_precision="auto"`: bfloat16 where the devices compute it natively, else float32.

bfloat16 keeps float32's exponent range, so GAN training needs no loss
scaling in it (Kalamkar et al. 2019); where the hardware multiplies bfloat16
natively it is the cheap way to more steps per second (1.7x for the embedded
preset on an AVX512_BF16 CPU, bench/). Where it does not (most CPUs without
AVX512_BF16 or AMX), oneDNN emulates it and it is slower than float32, so
"auto" keeps float32 there. GPUs stay in float32 under "auto": the choice
between bfloat16 and float16 there is the user's.
"""

import dataclasses

import tensorflow as tf

AUTO = "auto"
# /proc/cpuinfo flags of x86 CPUs whose matrix units take bfloat16.
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bfloat16_flags(cpuinfo_path="/proc/cpuinfo"):
  """The CPU's bfloat16 instruction-set flags from /proc/cpuinfo; () when absent or unreadable."""
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      flags = set()
      for line in f:
        if line.startswith("flags"):
          flags.update(line.partition(":")[2].split())
  except OSError:
    return ()
  return tuple(flag for flag in CPU_BFLOAT16_FLAGS if flag in flags)


def resolve_precision(mixed_precision, device_type, cpuinfo_path="/proc/cpuinfo"):
  """(precision, reason): the concrete precision of `mixed_precision` on `device_type` devices.

  Args:
    mixed_precision: a `runtime.mixed_precision` value; only "auto" changes.
    device_type: "CPU", "GPU" or "TPU", the strategy's compute devices.
    cpuinfo_path: where the CPU's flags are read (Linux).

  Returns:
    (one of "float32", "bfloat16", "float16", the reason as words or "").
  """
  if mixed_precision != AUTO:
    return mixed_precision, ""
  if device_type == "TPU":
    return "bfloat16", "auto: TPUs compute bfloat16 natively"
  if device_type == "CPU":
    flags = cpu_bfloat16_flags(cpuinfo_path)
    if flags:
      return "bfloat16", f"auto: this CPU computes bfloat16 natively ({', '.join(flags)})"
    return "float32", "auto: this CPU has no bfloat16 instructions (AVX512_BF16 or AMX)"
  return "float32", f"auto: float32 on {device_type}; bfloat16 or float16 there is your choice"


def resolve_config(config, strategy, log):
  """`config` with runtime.mixed_precision="auto" made concrete for `strategy`; one line says which."""
  devices = strategy.extended.worker_devices
  device_type = tf.DeviceSpec.from_string(devices[0]).device_type or "CPU"
  precision, reason = resolve_precision(config.runtime.mixed_precision, device_type)
  if not reason:
    return config
  log(f"mixed precision: {precision} ({reason})")
  return dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                 mixed_precision=precision))
