"""Benchmarks training speed, FLOPs, the input pipeline and evaluation, one subprocess per measurement."""

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python bench/run.py` puts bench/ on the path, not the repository root.
if REPO not in sys.path:
  sys.path.insert(0, REPO)

BENCHMARKS = ("flops", "matmul_peak", "train", "input", "inception", "fid", "profile")
MODES = ("eager", "function", "xla")
DTYPES = ("float32", "bfloat16", "float16")
STRATEGIES = ("one_device", "mirrored", "tpu")
# The preset of each image size, and the batch the full run measures it at.
PRESET_NAMES = {32: "cifar10", 64: "celeb_a", 128: "imagenet2012"}
FULL_BATCH = {32: 64, 64: 32, 128: 16}
INPUT_DATASETS = ("animal_mnist", "folder")
# Keys every JSON line carries (None where a benchmark has no such quantity).
REQUIRED_KEYS = ("name", "preset", "mode", "dtype", "batch", "images_per_second", "flops_per_image",
                 "peak_fraction", "strategy", "replicas", "peak_rss_mb", "seconds")
_RECORD_PREFIX = "@@bench "


# --------------------------------------------------------------------------- worker side
# Everything below up to the orchestration runs in the subprocess of one benchmark.

def _split_cpu():
  """Two logical CPUs for MirroredStrategy; must run before anything initialises TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def _emit(record):
  # ru_maxrss is in KiB on Linux: the peak of this process, i.e. of this benchmark.
  record = dict(record, peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
  print(_RECORD_PREFIX + json.dumps(record), flush=True)


def _timed(fn, repeats, cpu_seconds=None):
  """Wall seconds of each of `repeats` calls of fn (which must block until its work is done).

  Appends each call's CPU seconds (all threads of this process) to `cpu_seconds`.
  """
  seconds = []
  for _ in range(repeats):
    cpu_start, start = time.process_time(), time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - start)
    if cpu_seconds is not None:
      cpu_seconds.append(time.process_time() - cpu_start)
  return seconds


def _experiment(spec):
  """The preset's ExperimentConfig with the benchmark's width, batch and d_steps=1."""
  from sagan_tf.configs import presets  # pylint: disable=g-import-not-at-top
  config = presets.PRESETS[PRESET_NAMES[spec["preset"]]]()
  model = config.model
  if spec.get("width"):
    model = dataclasses.replace(model, g_width=spec["width"], d_width=spec["width"])
  # One "image" is one real image through one D and one G update, so d_steps=1
  # even for presets that train with more (celeb_a's 5).
  train = dataclasses.replace(config.train, batch_size=spec["batch"], d_steps=1, ema_decay=0.0)
  runtime = dataclasses.replace(
      config.runtime, seed=0, strategy=spec.get("strategy", "one_device"),
      tpu=spec.get("tpu", ""), mixed_precision=spec.get("dtype", "float32"),
      jit_compile=spec.get("mode") == "xla")
  return dataclasses.replace(config, model=model, train=train, runtime=runtime)


def _make_strategy(config):
  """The run's strategy, from the Trainer's own factory ("mirrored" spans the logical CPUs)."""
  from sagan_tf.training.trainer import make_strategy  # pylint: disable=g-import-not-at-top
  return make_strategy(config.runtime)


def _build_step(config, strategy):
  """The `TrainStep` train.py runs, from the Trainer's own builder, without a run directory."""
  from sagan_tf.training.components import build_components  # pylint: disable=g-import-not-at-top
  return build_components(config, strategy).train_step


def _synthetic_iterator(strategy, config):
  """A distributed iterator of one fixed random batch: the step alone, without input cost."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size, num_classes = config.model.image_size, config.model.num_classes

  def make(context):
    batch = context.get_per_replica_batch_size(config.train.batch_size)
    rng = np.random.default_rng(context.input_pipeline_id)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, max(num_classes, 1), (batch,)).astype(np.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()

  return iter(strategy.distribute_datasets_from_function(make))


def bench_train(spec):
  """Training images/second of one (preset, mode, dtype, strategy) at one batch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bench import flops  # pylint: disable=g-import-not-at-top
  config = _experiment(spec)
  if (spec["mode"] == "xla" and spec["strategy"] == "mirrored"
      and not tf.config.list_logical_devices("GPU")):
    _emit({"name": "train", "preset": spec["preset"], "mode": "xla", "dtype": spec["dtype"],
           "strategy": "mirrored", "replicas": 2, "batch": config.train.batch_size,
           "status": "skipped",
           "note": "XLA under MirroredStrategy on logical CPU devices fails; needs GPUs"})
    return
  strategy = _make_strategy(config)
  replicas = strategy.num_replicas_in_sync
  build_start = time.perf_counter()
  step = _build_step(config, strategy)
  iterator = _synthetic_iterator(strategy, config)
  build_seconds = time.perf_counter() - build_start
  steps = spec["steps"]
  if spec["mode"] == "eager":
    # The replica function's Python body, op by op, under the same strategy.run.
    def run(num_steps):
      step.metric_sums.assign(tf.zeros_like(step.metric_sums))
      for _ in range(num_steps):
        batches = tuple(next(iterator) for _ in range(config.train.d_steps))
        strategy.run(step._replica_iteration, args=(batches,))  # pylint: disable=protected-access
      return float(step.metric_sums.read_value()[0])
  else:
    def run(num_steps):
      return float(step.loop(iterator, tf.constant(num_steps, tf.int32))["d_loss"])

  warmup_start = time.perf_counter()
  run(1)  # Tracing, XLA compilation and first-touch allocations.
  warmup_seconds = time.perf_counter() - warmup_start
  if spec["mode"] != "eager":
    run(0)  # Another num_steps value: must not retrace.
  losses, cpu_seconds = [], []
  seconds = _timed(lambda: losses.append(run(steps)), spec["repeats"], cpu_seconds)
  last_loss = losses[-1]
  median = statistics.median(seconds)
  counts = flops.iteration_flops(config.model, config.train.batch_size)
  images_per_second = config.train.batch_size * steps / median
  _emit({
      "name": "train", "preset": spec["preset"], "mode": spec["mode"], "dtype": spec["dtype"],
      "strategy": spec["strategy"], "replicas": replicas, "batch": config.train.batch_size,
      "width": config.model.g_width, "steps": steps, "repeats": spec["repeats"],
      "images_per_second": images_per_second, "seconds": median,
      "chunk_seconds": [round(s, 4) for s in seconds],
      # On a busy machine, images per CPU-second times the core count roughly
      # estimates the idle rate (threads that spin-wait or scale badly skew it).
      "chunk_cpu_seconds": [round(s, 4) for s in cpu_seconds],
      "images_per_cpu_second": config.train.batch_size * steps / statistics.median(cpu_seconds),
      "build_seconds": build_seconds,
      "warmup_seconds": warmup_seconds, "flops_per_image": counts["flops_per_image"],
      "flops_per_second": counts["flops_per_image"] * images_per_second,
      "loop_trace_count": (None if spec["mode"] == "eager"
                           else step.loop.experimental_get_tracing_count()),
      "finite_loss": math.isfinite(last_loss)})


def bench_matmul_peak(spec):
  """Best FLOP/s of chained n x n matmuls in one tf.function, the machine's practical peak."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n, chain = spec["n"], spec["chain"]
  rng = np.random.default_rng(0)
  # An orthogonal factor keeps the chained product's norm fixed; a chain
  # rather than repeats of one product, which grappler would fold into one.
  q, _ = np.linalg.qr(rng.standard_normal((n, n)))

  @tf.function
  def product(x, b):
    for _ in tf.range(chain):
      x = tf.matmul(x, b)
    return x

  for dtype in spec["dtypes"]:
    x = tf.cast(tf.constant(rng.standard_normal((n, n)), tf.float32), dtype)
    b = tf.cast(tf.constant(q, tf.float32), dtype)
    product(x, b).numpy()
    seconds = _timed(lambda: product(x, b).numpy(), spec["repeats"])  # pylint: disable=cell-var-from-loop
    best = min(seconds)
    _emit({"name": "matmul_peak", "dtype": dtype, "n": n, "chain": chain,
           "flops_per_second": 2 * n ** 3 * chain / best, "seconds": best,
           "all_seconds": [round(s, 4) for s in seconds]})


def bench_flops(spec):
  """Analytic FLOPs per preset, and TF's profiler count of one config's graphs to check them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bench import flops  # pylint: disable=g-import-not-at-top
  for preset, batch in spec["batches"]:
    config = _experiment({"preset": preset, "batch": batch})
    counts = flops.iteration_flops(config.model, batch)
    _emit({"name": "flops", "preset": preset, "batch": batch, "width": config.model.g_width,
           "seconds": 0.0, **counts})
  check = spec["check"]
  config = _experiment(check)
  step = _build_step(config, tf.distribute.get_strategy())
  size, batch = config.model.image_size, check["batch"]
  images = tf.TensorSpec([batch, size, size, 3], tf.float32)
  labels = tf.TensorSpec([batch], tf.int32)
  z = tf.TensorSpec([batch, config.model.z_dim], tf.float32)
  both = tf.TensorSpec([2 * batch, size, size, 3], tf.float32)
  both_labels = tf.TensorSpec([2 * batch], tf.int32)
  generator, discriminator = step.generator, step.discriminator
  counts = flops.iteration_flops(config.model, batch)
  graphs = {
      "g_forward": (tf.function(lambda z, y: generator(z, y, training=True)), (z, labels),
                    flops.forward_flops(config.model, batch, "G")),
      "d_forward_2b": (tf.function(lambda x, y: discriminator(x, y, training=True)),
                       (both, both_labels), flops.forward_flops(config.model, 2 * batch, "D")),
      # The two updates together are one iteration.
      "d_update": (tf.function(step._d_update), (images, labels), counts["d_update_flops"]),  # pylint: disable=protected-access
      # A Python batch size, so that the traced graph has static shapes to count.
      "g_update": (tf.function(step._g_update), (batch,), counts["g_update_flops"]),  # pylint: disable=protected-access
  }
  profiled = {}
  for name, (function, signature, analytic) in graphs.items():
    start = time.perf_counter()
    total, matmul, by_type = flops.profile_float_ops(function.get_concrete_function(*signature))
    profiled[name] = matmul
    _emit({"name": "flops", "preset": check["preset"], "batch": batch,
           "width": config.model.g_width, "graph": name, "profiler_float_ops": total,
           "profiler_matmul_flops": matmul, "analytic_flops": analytic,
           "profiler_by_type": by_type, "seconds": time.perf_counter() - start})
  iteration = profiled["d_update"] + profiled["g_update"]
  _emit({"name": "flops", "preset": check["preset"], "batch": batch, "width": config.model.g_width,
         "graph": "iteration", "profiler_matmul_flops": iteration,
         "analytic_flops": counts["flops_per_iteration"],
         "flops_per_image": counts["flops_per_image"],
         "profiler_flops_per_image": iteration / batch, "seconds": 0.0})


def _write_png_folder(root, image_size, count):
  """`count` PNGs in two class folders, larger than `image_size` and not square, as photos are."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import PIL.Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  height, width = 2 * image_size, 3 * image_size // 2
  ramp = np.linspace(0, 255, width)[None, :, None]
  for index in range(count):
    folder = os.path.join(root, f"class_{index % 2}")
    os.makedirs(folder, exist_ok=True)
    noise = rng.integers(0, 64, (height, width, 3))
    image = np.clip(ramp * (index % 5 + 1) / 5 + noise, 0, 255).astype(np.uint8)
    PIL.Image.fromarray(image).save(os.path.join(folder, f"{index:05d}.png"))
  return height, width


def bench_input(spec):
  """Images/second that make_dataset delivers on the host, alone."""
  from sagan_tf.data import make_dataset  # pylint: disable=g-import-not-at-top
  size, batch = spec["preset"], spec["batch"]
  with tempfile.TemporaryDirectory() as root:
    detail = {}
    if spec["dataset"] == "folder":
      height, width = _write_png_folder(root, size, spec["files"])
      name = f"folder:{root}"
      detail = {"files": spec["files"], "file_size": f"{height}x{width}"}
    else:
      name = spec["dataset"]
    dataset = make_dataset(name, image_size=size, batch_size=batch, seed=0)
    iterator = iter(dataset)
    for _ in range(3):  # Fill the prefetch buffers and let AUTOTUNE settle.
      next(iterator)

    def run():
      for _ in range(spec["batches"]):
        images, _ = next(iterator)
      images.numpy()

    seconds = _timed(run, spec["repeats"])
  median = statistics.median(seconds)
  _emit({"name": "input", "preset": size, "dataset": spec["dataset"], "batch": batch,
         "dtype": "float32", "images_per_second": batch * spec["batches"] / median,
         "seconds": median, **detail})


def bench_inception(spec):
  """pool_3 features/second of the FID Inception network on 32x32 inputs (resized to 299 inside)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  record = {"name": "inception", "batch": spec["batch"], "dtype": "float32"}
  try:
    network = metrics.load_inception()
  except metrics.InceptionWeightsNotFoundError as error:
    _emit(dict(record, status="skipped", note=str(error).split(". ")[0]))
    return
  images = tf.constant(np.random.default_rng(0).uniform(0, 255, (spec["batch"], 32, 32, 3)),
                       tf.float32)
  network.forward(images)["pool_3"].numpy()
  seconds = _timed(lambda: network.forward(images)["pool_3"].numpy(), spec["repeats"])
  median = statistics.median(seconds)
  _emit(dict(record, images_per_second=spec["batch"] / median, seconds=median,
             source=network.source))


def bench_fid(spec):
  """Seconds of FID's statistics and matrix square root on random features."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # fid.py needs only numpy and scipy; loading it by path skips sagan_tf.metrics'
  # __init__, which imports TensorFlow, so the peak memory is FID's own.
  module_spec = importlib.util.spec_from_file_location(
      "fid", os.path.join(REPO, "sagan_tf", "metrics", "fid.py"))
  fid = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(fid)
  rng = np.random.default_rng(0)
  samples, dim = spec["samples"], spec["dim"]
  real = rng.standard_normal((samples, dim), dtype=np.float32)
  fake = rng.standard_normal((samples, dim), dtype=np.float32) + 0.1
  start = time.perf_counter()
  mu1, sigma1 = fid.compute_statistics(real)
  mu2, sigma2 = fid.compute_statistics(fake)
  statistics_seconds = time.perf_counter() - start
  start = time.perf_counter()
  distance = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  distance_seconds = time.perf_counter() - start
  _emit({"name": "fid", "samples": samples, "dim": dim, "dtype": "float64",
         "seconds": statistics_seconds + distance_seconds, "statistics_seconds": statistics_seconds,
         "frechet_distance_seconds": distance_seconds, "fid": distance})


def _op_times(logdir, first_phase, second_phase):
  """Summed op seconds from the newest profiler trace in `logdir`, by op type, part and layer.

  Op events are named "<scope>/<op name>:<op type>". TrainStep's replica
  function opens the name scopes d_update and g_update; gradient ops sit
  under gradient_tape/. Keras' "_1" call suffixes are dropped from scope
  names.
  """
  import glob  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = max(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True),
             key=os.path.getmtime)
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  tables = {"op_type": {}, "part": {}, "layer": {}}

  def add(table, key, seconds):
    tables[table][key] = tables[table].get(key, 0.0) + seconds

  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if ":" not in name or "::" in name or " " in name:
          continue
        op_name, op_type = name.rsplit(":", 1)
        seconds = event.duration_ps * 1e-12
        add("op_type", op_type, seconds)
        phase, direction, scope = "loop", "forward", []
        for part in op_name.split("/")[:-1]:
          bare = re.sub(r"_\d+$", "", part)
          if bare in (first_phase, second_phase):
            phase = bare
          elif part == "gradient_tape":
            direction = "backward"
          elif (part not in ("while", "body", "StatefulPartitionedCall")
                and not re.fullmatch(r"_\d+", part)):
            scope.append(re.sub(r"_\d+$", "", part))
        model = scope[0] if scope else "other"
        if model not in ("generator", "discriminator"):
          model, direction = "other (optimizer, metrics)", ""
        add("part", " ".join(p for p in (phase, direction, model) if p), seconds)
        add("layer", f"{phase} {direction or '-'} " + "/".join(scope[:3]), seconds)
  return tables


def bench_profile(spec):
  """Where one training iteration's time goes: op types and layers from a profiler trace."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = _experiment(spec)
  strategy = _make_strategy(config)
  step = _build_step(config, strategy)
  iterator = _synthetic_iterator(strategy, config)

  def run(num_steps):
    return float(step.loop(iterator, tf.constant(num_steps, tf.int32))["d_loss"])

  run(1)
  phases = ("g_update", "d_update") if config.train.g_first else ("d_update", "g_update")
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    run(spec["steps"])
    seconds = time.perf_counter() - start
    tf.profiler.experimental.stop()
    tables = _op_times(logdir, *phases)
  total = sum(tables["op_type"].values())
  top = spec.get("top", 15)

  def shares(table):
    ranked = sorted(table.items(), key=lambda item: -item[1])[:top]
    return [[name, round(value / spec["steps"], 4), round(value / total, 4)] for name, value in ranked]

  _emit({"name": "profile", "preset": spec["preset"], "mode": spec["mode"], "dtype": spec["dtype"],
         "strategy": spec["strategy"], "batch": config.train.batch_size, "steps": spec["steps"],
         "seconds": seconds / spec["steps"], "op_seconds_per_iteration": total / spec["steps"],
         "images_per_second": config.train.batch_size * spec["steps"] / seconds,
         "top_op_types": shares(tables["op_type"]), "top_parts": shares(tables["part"]),
         "top_layers": shares(tables["layer"])})


WORKERS = {"train": bench_train, "matmul_peak": bench_matmul_peak, "flops": bench_flops,
           "input": bench_input, "inception": bench_inception, "fid": bench_fid,
           "profile": bench_profile}


def run_worker(spec):
  if spec["kind"] != "fid":
    _split_cpu()
  WORKERS[spec["kind"]](spec)


# --------------------------------------------------------------------------- orchestration

@dataclasses.dataclass(frozen=True)
class Settings:
  """What one invocation measures; `--quick` fills in the small defaults."""
  only: tuple
  presets: tuple
  batches: dict
  width: int
  modes: tuple
  dtypes: tuple
  strategies: tuple
  matrix: str
  steps: int
  repeats: int
  tpu: str
  quick: bool


def _train_configs(settings):
  """(mode, dtype, strategy) triples: the full product, or the base and one change at a time."""
  base = ("function", "float32", "one_device")
  if settings.matrix == "full":
    return [(m, d, s) for m in settings.modes for d in settings.dtypes for s in settings.strategies]
  configs = [base] if all(b in c for b, c in zip(
      base, (settings.modes, settings.dtypes, settings.strategies))) else []
  configs += [(m, "float32", "one_device") for m in settings.modes if m != "function"]
  configs += [("function", d, "one_device") for d in settings.dtypes if d != "float32"]
  configs += [("function", "float32", s) for s in settings.strategies if s != "one_device"]
  return configs


def plan(settings):
  """The list of worker specs, in the order they run."""
  jobs = []
  quick = settings.quick
  if "flops" in settings.only:
    check_preset = settings.presets[-1]
    jobs.append({"kind": "flops",
                 "batches": [(p, FULL_BATCH[p]) for p in sorted(PRESET_NAMES)],
                 "check": {"preset": check_preset, "batch": settings.batches[check_preset],
                           "width": settings.width}})
  if "matmul_peak" in settings.only or "train" in settings.only:
    jobs.append({"kind": "matmul_peak", "dtypes": ["float32", "bfloat16"], "n": 2048,
                 "chain": 2 if quick else 10, "repeats": 3 if quick else 5})
  if "train" in settings.only:
    for preset in settings.presets:
      for mode, dtype, strategy in _train_configs(settings):
        jobs.append({"kind": "train", "preset": preset, "mode": mode, "dtype": dtype,
                     "strategy": strategy, "batch": settings.batches[preset], "width": settings.width,
                     "steps": settings.steps, "repeats": settings.repeats, "tpu": settings.tpu})
  if "input" in settings.only:
    for preset in settings.presets:
      for dataset in INPUT_DATASETS:
        jobs.append({"kind": "input", "preset": preset, "dataset": dataset,
                     "batch": settings.batches[preset], "batches": 50 if quick else 100,
                     "repeats": settings.repeats, "files": 64 if quick else 256})
  if "inception" in settings.only:
    jobs.append({"kind": "inception", "batch": 10 if quick else 50, "repeats": 2 if quick else 3})
  if "fid" in settings.only:
    # scipy's sqrtm of 2048 x 2048 takes tens of seconds on two cores; quick
    # mode times the same code on 512-dimensional features.
    jobs.append({"kind": "fid", "samples": 10000, "dim": 512 if quick else 2048})
  if "profile" in settings.only:
    preset = settings.presets[-1]
    jobs.append({"kind": "profile", "preset": preset, "batch": settings.batches[preset],
                 "width": settings.width, "mode": "function", "dtype": "float32",
                 "strategy": "one_device", "steps": 1})
  return jobs


def _describe(spec):
  keys = ("preset", "mode", "dtype", "strategy", "dataset", "batch")
  return spec["kind"] + " " + " ".join(f"{k}={spec[k]}" for k in keys if k in spec)


def run_job(spec, timeout):
  """Runs one benchmark in its own process; returns its records (an error record on failure)."""
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  start = time.perf_counter()
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  try:
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)],
                            capture_output=True, text=True, timeout=timeout, env=env, check=False)
    stdout, stderr, code = result.stdout, result.stderr, result.returncode
  except subprocess.TimeoutExpired as error:
    stdout = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
    stderr, code = f"timed out after {timeout} s", -1
  records = [json.loads(line[len(_RECORD_PREFIX):]) for line in stdout.splitlines()
             if line.startswith(_RECORD_PREFIX)]
  if code != 0 or not records:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    records.append({"name": spec["kind"], **{k: spec[k] for k in
                                             ("preset", "mode", "dtype", "strategy", "batch", "dataset")
                                             if k in spec},
                    "status": "error", "note": lines[-1][:300] if lines else f"exit code {code}"})
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  for record in records:
    record.setdefault("status", "ok")
    # Wall and CPU time of the whole process (import, build, warm-up, timing):
    # CPU well below 2 x wall means other load took the cores.
    record["job_seconds"] = round(time.perf_counter() - start, 2)
    record["job_cpu_seconds"] = round(after.ru_utime + after.ru_stime - before.ru_utime
                                      - before.ru_stime, 2)
  return records


def _complete(record, results):
  """Adds what needs other benchmarks' results (peak fraction, input/step ratio) and every key."""
  if record["name"] == "train" and record.get("flops_per_second"):
    peaks = {r["dtype"]: r["flops_per_second"] for r in results
             if r["name"] == "matmul_peak" and r["status"] == "ok"}
    if "float32" in peaks:
      record["peak_fraction"] = record["flops_per_second"] / peaks["float32"]
    # Against the matmul peak of the run's own compute dtype: bfloat16 can
    # exceed the float32 peak.
    if record["dtype"] in peaks:
      record["dtype_peak_fraction"] = record["flops_per_second"] / peaks[record["dtype"]]
  if record["name"] == "input" and record.get("images_per_second"):
    consumed = [r["images_per_second"] for r in results if r["name"] == "train"
                and r.get("preset") == record["preset"] and r.get("images_per_second")]
    if consumed:
      record["train_images_per_second"] = max(consumed)
      record["ratio_to_train"] = record["images_per_second"] / max(consumed)
      record["ratio_ok"] = record["ratio_to_train"] >= 3.0
  for key in REQUIRED_KEYS:
    record.setdefault(key, None)
  return record


def _fmt(value, scale=1.0, digits=1):
  if value is None:
    return "-"
  return f"{value / scale:,.{digits}f}"


def _notes(r):
  if r["status"] != "ok":
    return f"{r['status']}: {r.get('note', '')}"
  name = r["name"]
  if name == "train":
    trace = "" if r.get("loop_trace_count") is None else f"traces={r['loop_trace_count']} "
    if r["dtype"] != "float32" and r.get("dtype_peak_fraction"):
      trace += f"{r['dtype_peak_fraction']:.0%} of {r['dtype']} peak "
    return (f"{trace}warmup={r['warmup_seconds']:.1f}s "
            f"img/cpu-s={_fmt(r.get('images_per_cpu_second'), digits=2)} "
            f"width={r['width']} "
            f"chunks={r['repeats']}x{r['steps']} finite={r['finite_loss']}")
  if name == "input":
    ratio = ("" if r.get("ratio_to_train") is None else
             f" {r['ratio_to_train']:.1f}x train ({'ok' if r['ratio_ok'] else 'BELOW 3x'})")
    return f"{r['dataset']}{ratio}"
  if name == "flops":
    if r.get("graph"):
      analytic = r.get("analytic_flops")
      agree = "" if not analytic else f" ({r['profiler_matmul_flops'] / analytic - 1:+.3%})"
      # The traced G-update graph still holds D's kernel gradients, which grappler prunes.
      pruned = " (traced graph incl. D kernel grads)" if r["graph"] in ("g_update", "iteration") else ""
      return (f"{r['graph']} width={r['width']}: profiler {_fmt(r['profiler_matmul_flops'], 1e9, 2)}"
              f" vs analytic {_fmt(analytic, 1e9, 2)} GFLOP{agree}{pruned}")
    return (f"G fwd {_fmt(r['g_forward_flops'], 1e9, 2)} D fwd {_fmt(r['d_forward_flops'], 1e9, 2)} "
            f"GFLOP/image; iteration {_fmt(r['flops_per_iteration'], 1e12, 2)} TFLOP")
  if name == "matmul_peak":
    return f"{r['n']}^3 x{r['chain']}: {_fmt(r['flops_per_second'], 1e9)} GFLOP/s"
  if name == "fid":
    return (f"{r['samples']}x{r['dim']}: statistics {r['statistics_seconds']:.1f}s, "
            f"frechet_distance (sqrtm) {r['frechet_distance_seconds']:.1f}s")
  if name == "inception":
    return f"{r.get('source')} weights, 32x32 inputs resized to 299"
  if name == "profile":
    return "top op types: " + ", ".join(f"{n} {s:.0%}" for n, _, s in r["top_op_types"][:3])
  return ""


def format_table(results):
  """The human report: an aligned table, ratios between modes, and the profile."""
  header = ("name", "preset", "mode", "dtype", "strategy", "batch", "img/s", "GFLOP/img", "GFLOP/s",
            "peak%", "RSS MB", "seconds", "notes")
  rows = []
  for r in results:
    rows.append((r["name"], _fmt(r["preset"], digits=0), r["mode"] or "-", r["dtype"] or "-",
                 (f"{r['strategy']}x{r['replicas']}" if r["replicas"] else r["strategy"]) or "-",
                 _fmt(r["batch"], digits=0), _fmt(r["images_per_second"], digits=2),
                 _fmt(r["flops_per_image"], 1e9, 2),
                 _fmt(r.get("flops_per_second") if r["name"] == "train" else None, 1e9),
                 _fmt(r["peak_fraction"], 0.01), _fmt(r["peak_rss_mb"], digits=0),
                 _fmt(r["seconds"], digits=2), _notes(r)))
  widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header) - 1)]
  lines = ["  ".join(str(c).rjust(w) if i >= 5 else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(row[:-1], widths))) + "  " + row[-1]
           for row in [header] + rows]
  lines += ["", "Ratios of images/second (same preset and batch, one setting changed):"]
  train = {(r["preset"], r["batch"], r["mode"], r["dtype"], r["strategy"]): r["images_per_second"]
           for r in results if r["name"] == "train" and r.get("images_per_second")}
  pairs = (("function/eager", 2, "function", "eager"), ("xla/function", 2, "xla", "function"),
           ("bf16/f32", 3, "bfloat16", "float32"), ("mirrored/one_device", 4, "mirrored", "one_device"))
  found = False
  names = ("preset", "batch", "mode", "dtype", "strategy")
  for label, index, top, bottom in pairs:
    for key, value in sorted(train.items(), key=lambda item: str(item[0])):
      other = key[:index] + (bottom,) + key[index + 1:]
      if key[index] != top or other not in train:
        continue
      found = True
      fixed = " ".join(f"{n}={k}" for i, (n, k) in enumerate(zip(names, key)) if i != index)
      lines.append(f"  {label:<20} {value / train[other]:6.2f}   at {fixed}")
  if not found:
    lines.append("  (no pairs measured)")
  for r in results:
    if r["name"] == "profile" and r["status"] == "ok":
      lines += ["", f"Profile of preset {r['preset']} batch {r['batch']} {r['mode']} {r['dtype']}: "
                f"{r['seconds']:.2f} s per iteration, {r['op_seconds_per_iteration']:.2f} s of op "
                "time (ops on both cores add up)"]
      for title, key in (("op type", "top_op_types"), ("part", "top_parts"),
                         ("layer", "top_layers")):
        lines.append(f"  by {title}:")
        lines += [f"    {share:6.1%}  {seconds:8.3f} s  {name}" for name, seconds, share in r[key]]
  lines += ["", "One image = one real image consumed by one D update and one G update at that batch "
            "(d_steps=1); warm-up excluded; seconds = median timed chunk (train, input, inception), "
            "best run (matmul_peak), total (fid)."]
  return "\n".join(lines)


def _parse_list(text, choices, name):
  values = tuple(v.strip() for v in text.split(",") if v.strip())
  unknown = [v for v in values if v not in choices]
  if unknown or not values:
    raise SystemExit(f"--{name}: unknown {unknown or text!r}; choose from {', '.join(choices)}")
  return values


def _parse_batches(text, presets):
  """'16' for every preset, or '128:16,32:64' per preset."""
  if text is None:
    return {}
  if ":" not in text:
    return {p: int(text) for p in presets}
  pairs = (item.split(":") for item in text.split(",") if item.strip())
  return {int(size): int(batch) for size, batch in pairs}


def parse_settings(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true",
                      help="small configs (preset 32, width 16, batch 16, base config and one "
                           "change at a time), under 3 minutes on 2 cores")
  parser.add_argument("--json", action="store_true", help="print one JSON object per line")
  parser.add_argument("--only", default=",".join(b for b in BENCHMARKS if b != "profile"),
                      help=f"comma list of {', '.join(BENCHMARKS)} (profile: one function-mode "
                           "iteration of the largest preset, traced by op; full run includes it)")
  parser.add_argument("--presets", default=None, help="comma list of 32, 64, 128")
  parser.add_argument("--batch", default=None, help="global batch: one number, or size:batch pairs")
  parser.add_argument("--width", type=int, default=None,
                      help="base channel width of G and D (default: the preset's, 16 in --quick)")
  parser.add_argument("--modes", default=",".join(MODES))
  parser.add_argument("--dtypes", default="float32,bfloat16",
                      help="float32, bfloat16 (mixed_bfloat16) and float16 (mixed_float16)")
  parser.add_argument("--strategies", default="one_device,mirrored",
                      help="one_device (GPU 0 if any, else CPU), mirrored (all GPUs, else two "
                           "logical CPUs), tpu (with --tpu)")
  parser.add_argument("--tpu", default="", help="TPU name or grpc:// address, 'local' on a TPU VM")
  parser.add_argument("--matrix", choices=("full", "star"), default=None,
                      help="full: every mode x dtype x strategy; star: the base (function, "
                           "float32, one_device) and one change at a time (default in --quick)")
  parser.add_argument("--steps", type=int, default=None,
                      help="training iterations per timed chunk (default 2, 3 in --quick)")
  parser.add_argument("--repeats", type=int, default=3, help="timed chunks; the median is reported")
  parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark process")
  parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._worker:  # pylint: disable=protected-access
    return args, None
  presets = tuple(int(p) for p in _parse_list(
      args.presets or ("32" if args.quick else "32,64,128"), ("32", "64", "128"), "presets"))
  batches = {p: (16 if args.quick else FULL_BATCH[p]) for p in presets}
  batches.update(_parse_batches(args.batch, presets))
  settings = Settings(
      only=_parse_list(args.only, BENCHMARKS, "only"), presets=presets, batches=batches,
      width=args.width or (16 if args.quick else None),
      modes=_parse_list(args.modes, MODES, "modes"), dtypes=_parse_list(args.dtypes, DTYPES, "dtypes"),
      strategies=_parse_list(args.strategies, STRATEGIES, "strategies"),
      matrix=args.matrix or ("star" if args.quick else "full"),
      steps=args.steps or (3 if args.quick else 2), repeats=args.repeats, tpu=args.tpu,
      quick=args.quick)
  if "tpu" in settings.strategies and not settings.tpu:
    raise SystemExit("--strategies=tpu needs --tpu")
  return args, settings


def main(argv=None):
  args, settings = parse_settings(argv)
  if settings is None:
    run_worker(json.loads(args._worker))  # pylint: disable=protected-access
    return 0
  timeout = args.timeout or (600 if settings.quick else 3600)
  jobs = plan(settings)
  results = []
  start = time.perf_counter()
  for index, spec in enumerate(jobs, 1):
    if not args.json:
      print(f"[{index}/{len(jobs)}] {_describe(spec)}", file=sys.stderr, flush=True)
    for record in run_job(spec, timeout):
      results.append(_complete(record, results))
      if args.json:
        print(json.dumps(record), flush=True)
  if not args.json:
    print(format_table(results))
    print(f"\n{len(jobs)} benchmark processes in {time.perf_counter() - start:.0f} s; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.")
  return 1 if any(r["status"] == "error" for r in results) else 0


if __name__ == "__main__":
  sys.exit(main())
