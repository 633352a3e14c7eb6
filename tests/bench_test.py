"""Functional tests of the benchmark: FLOP counts, planning, the report and a tiny JSON run; no timings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import flops
from bench import run
from sagan_tf.configs import presets
from sagan_tf.configs.experiment import ModelConfig
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.models.build import build_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sn_kernel_sizes(model):
  return sum(int(np.prod(layer.kernel.shape)) for layer in model._flatten_layers()  # pylint: disable=protected-access
             if isinstance(layer, SpectralNormalization))


@pytest.mark.parametrize("image_size,num_classes", [(32, 10), (64, 0), (128, 5)])
def test_flops_layers_match_built_model_kernels(image_size, num_classes):
  # Every spectrally normalised kernel of the built models appears once in the
  # layer table, so the table walks the same architecture.
  config = ModelConfig(image_size=image_size, num_classes=num_classes, g_width=8, d_width=8)
  generator, discriminator = build_from_config(config)
  counts = flops.iteration_flops(config, batch_size=4)
  assert counts["g_kernel_params"] == _sn_kernel_sizes(generator)
  assert counts["d_kernel_params"] == _sn_kernel_sizes(discriminator)


def test_flops_of_the_imagenet_generator_by_hand():
  # g_block1 at 8x8, 1024 -> 1024: two 3x3 convs and a 1x1 shortcut.
  layers = {layer.name: layer.macs for layer in flops.generator_layers(128, 64)}
  assert layers["g_block1/snconv1"] == 8 * 8 * 9 * 1024 * 1024
  assert layers["g_block1/snconv3"] == 8 * 8 * 1024 * 1024
  # Attention at 32x32 with 256 channels: N = 1024 queries, 256 pooled keys.
  assert layers["g_non_local/theta_phi"] == 1024 * 256 * 32
  assert layers["g_non_local/beta_g"] == 1024 * 256 * 128
  assert layers["g_snconv_last"] == 128 * 128 * 9 * 64 * 3


def test_iteration_flops_composition():
  config = presets.imagenet2012().model
  counts = flops.iteration_flops(config, batch_size=16)
  g, d = counts["g_forward_flops"], counts["d_forward_flops"]
  # Per image, ignoring the batch-independent power iteration: 4 G forwards, 8 D forwards.
  assert counts["flops_per_image"] == pytest.approx(4 * g + 8 * d, rel=0.01)
  assert counts["flops_per_iteration"] == counts["d_update_flops"] + counts["g_update_flops"]
  two_d_steps = flops.iteration_flops(config, batch_size=16, d_steps=2)
  assert two_d_steps["flops_per_iteration"] == 2 * counts["d_update_flops"] + counts["g_update_flops"]


def test_quick_plan_changes_one_setting_at_a_time():
  _, settings = run.parse_settings(["--quick"])
  train = [(j["mode"], j["dtype"], j["strategy"]) for j in run.plan(settings) if j["kind"] == "train"]
  assert train == [("function", "float32", "one_device"), ("eager", "float32", "one_device"),
                   ("xla", "float32", "one_device"), ("function", "bfloat16", "one_device"),
                   ("function", "float32", "mirrored")]
  assert all(j["batch"] == 16 and j["width"] == 16 for j in run.plan(settings) if j["kind"] == "train")


def test_full_plan_covers_every_combination():
  _, settings = run.parse_settings(["--only=train", "--batch=128:8"])
  train = [j for j in run.plan(settings) if j["kind"] == "train"]
  assert len(train) == 3 * 3 * 2 * 2
  assert {j["batch"] for j in train if j["preset"] == 128} == {8}
  assert {j["batch"] for j in train if j["preset"] == 32} == {64}


def test_bad_flags_are_refused():
  with pytest.raises(SystemExit, match="unknown"):
    run.parse_settings(["--only=speed"])
  with pytest.raises(SystemExit, match="--tpu"):
    run.parse_settings(["--strategies=tpu"])


def test_report_has_ratios_and_notes():
  base = {"name": "train", "preset": 32, "batch": 16, "dtype": "float32", "strategy": "one_device",
          "replicas": 1, "flops_per_image": 2e9, "flops_per_second": 4e10, "peak_rss_mb": 900.0,
          "seconds": 1.0, "status": "ok", "width": 16, "steps": 3, "repeats": 3,
          "warmup_seconds": 5.0, "images_per_cpu_second": 10.0, "finite_loss": True}
  records = [dict(base, mode="function", images_per_second=20.0, loop_trace_count=1),
             dict(base, mode="eager", images_per_second=5.0, loop_trace_count=None),
             {"name": "train", "preset": 32, "mode": "xla", "dtype": "float32",
              "strategy": "mirrored", "batch": 16, "status": "skipped", "note": "needs GPUs"}]
  results = []
  for record in records:
    results.append(run._complete(record, results))  # pylint: disable=protected-access
  table = run.format_table(results)
  assert "function/eager" in table and "4.00" in table
  assert "skipped: needs GPUs" in table
  assert all(key in results[-1] for key in run.REQUIRED_KEYS)


def test_inception_plan_has_peak_and_three_networks():
  _, settings = run.parse_settings(["--only=inception"])
  jobs = run.plan(settings)
  assert [j["kind"] for j in jobs] == ["matmul_peak"] + ["inception"] * 3
  assert [j["network"] for j in jobs[1:]] == ["unfolded", "folded", "torch"]
  assert {j["batch"] for j in jobs[1:]} == {50}


def test_inception_peak_fraction_uses_the_same_runs_peak():
  results = [run._complete({"name": "matmul_peak", "dtype": "float32", "status": "ok",  # pylint: disable=protected-access
                            "flops_per_second": 200e9}, [])]
  record = run._complete({"name": "inception", "network": "folded", "batch": 50,  # pylint: disable=protected-access
                          "dtype": "float32", "status": "ok", "images_per_second": 10.0,
                          "flops_per_image": 11e9, "seconds": 5.0, "cpu_seconds": 9.0,
                          "source": "torchscript"}, results)
  assert record["flops_per_second"] == pytest.approx(110e9)
  assert record["peak_fraction"] == pytest.approx(0.55)
  assert "cpu/wall=1.80" in run.format_table([record])


def test_inception_flops_count_convolutions():
  from bench import eval_bench  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((9, 9, 2))
  x = keras.layers.Conv2D(4, 3, strides=2, padding="valid", use_bias=False)(inputs)
  x = keras.layers.Conv2D(5, (1, 3), padding="same")(x)
  model = keras.Model(inputs, keras.layers.MaxPooling2D(2)(x))
  # 4x4 outputs of 3x3x2 -> 4, then 4x4 outputs of 1x3x4 -> 5; 2 FLOPs per multiply-add.
  assert eval_bench._inception_flops_per_image(model) == 2 * (16 * 9 * 2 * 4 + 16 * 3 * 4 * 5)  # pylint: disable=protected-access


def test_torch_row_is_skipped_without_torch(monkeypatch, capsys):
  from bench import eval_bench  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  eval_bench._bench_inception_torch({"batch": 2, "repeats": 1}, {"name": "inception"}, "x.pt")  # pylint: disable=protected-access
  line = capsys.readouterr().out.strip()
  record = json.loads(line[len("@@bench "):])
  assert record["status"] == "skipped" and "torch is not installed" in record["note"]


@pytest.mark.slow
def test_quick_json_run_of_flops_and_fid():
  # The subprocesses, the JSON protocol and the profiler cross-check, end to end.
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "run.py"), "--quick", "--json",
       "--only=flops,fid", "--timeout=600"],
      capture_output=True, text=True, check=False, cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert {r["name"] for r in records} == {"flops", "fid"}
  for record in records:
    assert all(key in record for key in run.REQUIRED_KEYS), record
    assert record["status"] == "ok"
    assert record["peak_rss_mb"] > 0
  per_preset = {r["preset"]: r for r in records if r["name"] == "flops" and "graph" not in r}
  assert sorted(per_preset) == [32, 64, 128]
  assert per_preset[128]["batch"] == 16
  checks = {r["graph"]: r for r in records if r.get("graph")}
  for graph in ("g_forward", "d_forward_2b", "d_update"):
    assert checks[graph]["profiler_matmul_flops"] == pytest.approx(
        checks[graph]["analytic_flops"], rel=0.01)
  fid = next(r for r in records if r["name"] == "fid")
  assert fid["samples"] == 10000 and np.isfinite(fid["fid"])
