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


def device_type(runtime, strategy=None):
  """"TPU", "GPU" or "CPU": what `strategy` (or, before it exists, `runtime`) computes on.

  Without a strategy: TPU for runtime.strategy="tpu", else GPU when one is
  visible (listing physical devices does not start the TensorFlow runtime,
  so a multi-worker strategy can still be set up afterwards), else CPU.
  """
  if strategy is not None:
    return tf.DeviceSpec.from_string(strategy.extended.worker_devices[0]).device_type or "CPU"
  if runtime.strategy == "tpu":
    return "TPU"
  return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def resolve_config(config, log, strategy=None):
  """`config` with runtime.mixed_precision="auto" made concrete; one line says which and why.

  train.py resolves before it writes config.json, so a resumed run keeps the
  precision it started with (on any machine); the Trainer resolves again
  (a no-op then) for library users who construct it with "auto".
  """
  resolved, reason = resolve_precision(config.runtime.mixed_precision,
                                       device_type(config.runtime, strategy))
  if not reason:
    return config
  log(f"mixed precision: {resolved} ({reason})")
  return dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                 mixed_precision=resolved))
