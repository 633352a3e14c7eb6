"""Benchmarks training speed, FLOPs, the input pipeline and evaluation, one subprocess per measurement."""

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python bench/run.py` puts bench/ on the path, not the repository root.
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# After the path is set: the benchmark modules import TensorFlow only inside
# their functions, so the orchestrator and the fid worker never load it.
from bench import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import eval_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import flops_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import input_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import matmul_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import train_bench  # pylint: disable=g-import-not-at-top,wrong-import-position

BENCHMARKS = ("flops", "matmul_peak", "train", "input", "inception", "fid", "profile")
MODES = ("eager", "function", "xla")
DTYPES = ("float32", "bfloat16", "float16")
STRATEGIES = ("one_device", "mirrored", "tpu")
# The batch the full run measures each preset's image size at.
FULL_BATCH = {32: 64, 64: 32, 128: 16}
INPUT_DATASETS = ("animal_mnist", "folder")
INCEPTION_NETWORKS = ("unfolded", "folded", "torch")
# Keys every JSON line carries (None where a benchmark has no such quantity).
REQUIRED_KEYS = ("name", "preset", "mode", "dtype", "batch", "images_per_second", "flops_per_image",
                 "peak_fraction", "strategy", "replicas", "peak_rss_mb", "seconds")

WORKERS = {"train": train_bench.bench_train, "matmul_peak": matmul_bench.bench_matmul_peak,
           "flops": flops_bench.bench_flops, "input": input_bench.bench_input,
           "inception": eval_bench.bench_inception, "fid": eval_bench.bench_fid,
           "profile": train_bench.bench_profile}


def run_worker(spec):
  """Runs one benchmark in this process: the `--_worker` side of `run_job`."""
  if spec["kind"] != "fid":
    common.split_cpu()
  WORKERS[spec["kind"]](spec)


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
                 "batches": [(p, FULL_BATCH[p]) for p in sorted(common.PRESET_NAMES)],
                 "check": {"preset": check_preset, "batch": settings.batches[check_preset],
                           "width": settings.width}})
  if {"matmul_peak", "train", "inception"} & set(settings.only):
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
    # Before (separate batch norms), after (folded) and PyTorch on the same file, one run.
    for network in INCEPTION_NETWORKS:
      jobs.append({"kind": "inception", "network": network, "batch": 10 if quick else 50,
                   "repeats": 2 if quick else 5})
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
  keys = ("preset", "mode", "dtype", "strategy", "dataset", "network", "batch")
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
  records = [json.loads(line[len(common.RECORD_PREFIX):]) for line in stdout.splitlines()
             if line.startswith(common.RECORD_PREFIX)]
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
  peaks = {r["dtype"]: r["flops_per_second"] for r in results
           if r["name"] == "matmul_peak" and r["status"] == "ok"}
  if record["name"] == "inception" and record.get("images_per_second"):
    record["flops_per_second"] = record["images_per_second"] * record["flops_per_image"]
    if "float32" in peaks:
      record["peak_fraction"] = record["flops_per_second"] / peaks["float32"]
  if record["name"] == "train" and record.get("flops_per_second"):
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
    cpu = r.get("cpu_seconds")
    busy = f" cpu/wall={cpu / r['seconds']:.2f}" if cpu else ""
    return f"{r['network']} ({r.get('source')}), 32x32 inputs resized to 299{busy}"
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
                 _fmt(r.get("flops_per_second") if r["name"] in ("train", "inception") else None,
                    1e9),
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
