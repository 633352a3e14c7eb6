"""Parity with the official TF1 SAGAN: its checkpoint loaded, one training step, conversion.

Against the recorded official run in shared/fixtures/official_parity and the full-size
official variable listing; official_roundtrip_test.py writes the formats from our own models.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import official
from sagan_tf.configs import presets
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.models import build_from_config, build_sagan
from sagan_tf.training import run_dir
from sagan_tf.training.optimizers import make_optimizers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(REPO_ROOT), "shared", "fixtures", "official_parity")
SMALL = os.path.join(FIXTURES, "small")
CHECKPOINT = os.path.join(SMALL, "checkpoint")
EXPECTED = os.path.join(SMALL, "expected.npz")
SNAPSHOT = os.path.join(SMALL, "expected_snapshot.npz")
FULL_SIZE = os.path.join(FIXTURES, "full_size_variables.json")

needs_fixture = pytest.mark.skipif(
    not (os.path.exists(EXPECTED) and os.path.exists(SNAPSHOT) and os.path.isdir(CHECKPOINT)),
    reason=f"official parity fixture not found at {SMALL} (shared/fixtures next to the repository)")
needs_listing = pytest.mark.skipif(
    not os.path.exists(FULL_SIZE), reason=f"full-size official variable listing {FULL_SIZE} not found")

# Fixture README "Numerical floor": G conv biases ahead of a batch norm have a
# true gradient of ~0 (|grad| <= 3.3e-7 here), so they are compared absolutely.
BIAS_FLOOR = 1e-5


@pytest.fixture(scope="module")
def expected():
  return dict(np.load(EXPECTED))


@pytest.fixture(scope="module")
def snapshot():
  return dict(np.load(SNAPSHOT))


@pytest.fixture(scope="module")
def official_results(expected):
  """Every fixture comparison with sn_gradient="official", step 2 included (~30 s)."""
  results = official.verify_official(CHECKPOINT, expected, step2=True)
  return {r.quantity: r for r in results}


@pytest.fixture(scope="module")
def autodiff_run(expected):
  """Run 2 with plain-autodiff spectral-norm gradients."""
  generator, discriminator = official.load_official(CHECKPOINT, sn_gradient="autodiff")
  return official.reference_run(generator, discriminator, expected["z2"], expected["labels2"],
                                expected["real2"])


def _rel_l2(ours, reference):
  # d_sn_linear/bias has an exact 0 gradient (the hinge terms cancel); 0/0 counts as 0.
  return official.compare("", ours, reference).rel_l2


# ----------------------------------------------------------------------------
# Against the official fixture.


@needs_fixture
def test_loads_fixture_checkpoint_with_every_variable_accounted_for():
  loaded = official.load_official(CHECKPOINT)
  generator, discriminator = loaded
  config = loaded.model_config
  assert (config.image_size, config.num_classes, config.g_width, config.d_width, config.z_dim) == (
      128, 10, 8, 8, 128)
  assert config.sn_gradient == "official" and config.g_bn_bessel
  assert (config.bn_epsilon, config.cbn_momentum, config.g_bn_momentum) == (1e-5, 0.999, 0.9999)
  reader = tf.train.load_checkpoint(CHECKPOINT)
  names = set(reader.get_variable_to_shape_map())
  report = loaded.report
  assert len(names) == 382
  assert set(report.assigned) | set(report.skipped) == names
  assert not set(report.assigned) & set(report.skipped)
  assert len(report.assigned) == 169  # 103 trainables + 44 u + 22 BN statistics
  assert {n for n in report.skipped if not n.endswith(("/Adam", "/Adam_1"))} == {
      "beta1_power", "beta2_power", "beta1_power_1", "beta2_power_1", "global_step", "d_step",
      "g_step"}
  assert loaded.step == 1 and loaded.g_optimizer is None
  mapping = official.official_variable_map(generator, discriminator)
  assert set(mapping) == set(report.assigned)
  for name, variable in mapping.items():
    np.testing.assert_array_equal(np.asarray(variable),
                                  reader.get_tensor(name).reshape(variable.shape), err_msg=name)
  assert official.official_shapes(generator, discriminator)["model/g_block1/cbn_0/mean"] == (
      1, 1, 1, 128)
  # Every trainable variable is mapped: the map covers the models.
  mapped = {id(v) for v in mapping.values()}
  trainables = generator.trainable_variables + discriminator.trainable_variables
  assert all(id(v) in mapped for v in trainables)


@needs_fixture
@pytest.mark.parametrize("quantity", ["g_train", "g_eval", "d_real", "d_fake", "d_loss",
                                      "d_loss_real", "d_loss_fake", "g_loss"])
def test_forward_values_and_losses_match(official_results, quantity):
  result = official_results[quantity]
  assert result.max_abs <= 1e-4, result


@needs_fixture
@pytest.mark.parametrize("net", ["grad_d", "grad_g"])
def test_official_gradients_match(official_results, net):
  results = [r for q, r in official_results.items() if q.startswith(f"{net}/")]
  assert len(results) == {"grad_d": 42, "grad_g": 61}[net]
  for result in results:
    if official.near_zero_gradient(result.quantity):
      assert result.max_abs <= BIAS_FLOOR, result
    else:
      assert result.rel_l2 <= 1e-2, result


@needs_fixture
def test_only_g_conv_biases_use_the_absolute_floor(expected):
  floored = [k for k in expected if k.startswith("grad_") and official.near_zero_gradient(k)]
  assert len(floored) == 15  # snconv{1,2,3} of g_block1..5
  assert max(np.abs(expected[k]).max() for k in floored) < 1e-6
  assert np.abs(expected["grad_g/model/g_snconv_last/biases"]).max() > 0.1


@needs_fixture
def test_autodiff_gradients_are_the_snapshot_form(autodiff_run, expected, snapshot):
  """"autodiff" reproduces expected_snapshot.npz; "official" (above) reproduces expected.npz."""
  for key, value in autodiff_run.items():
    if not key.startswith("grad_"):
      continue
    net, name = key.split("/", 1)
    reference = snapshot[f"{net}_snapshot/{name}"]
    if official.near_zero_gradient(key):
      assert np.abs(value - reference).max() <= BIAS_FLOOR, key
    else:
      assert _rel_l2(value, reference) <= 1e-2, key
  # The two forms differ by more than the tolerance, so each test tells them apart.
  key = "grad_d/model/d_optimized_block1/sn_conv3/w"
  assert _rel_l2(autodiff_run[key], expected[key]) > 0.03
  snapshot_key = "grad_d_snapshot/model/d_optimized_block1/sn_conv3/w"
  assert _rel_l2(snapshot[snapshot_key], expected[key]) > 0.03


@needs_fixture
def test_u_after_the_run_matches(official_results):
  results = [r for q, r in official_results.items() if q.startswith("u_after/")]
  assert len(results) == 44
  for result in results:
    assert result.max_abs <= 1e-5, result


@needs_fixture
def test_second_training_step_matches(official_results, expected):
  results = {q: r for q, r in official_results.items() if q.startswith("step2/")}
  expected_names = {k for k in expected if k.startswith("step2/")}
  # Every model variable (weights, u, BN statistics) and both beta2 powers.
  assert set(results) == expected_names - {"step2/global_step", "step2/d_step", "step2/g_step",
                                           "step2/beta1_power", "step2/beta1_power_1"}
  for result in results.values():
    assert result.max_abs <= 5e-4, result
  for name in ("step2_g_loss", "step2_d_loss"):
    assert official_results[name].max_abs <= 1e-4, official_results[name]


@needs_fixture
def test_cli_converts_into_a_run_directory_the_trainer_resumes(tmp_path, capsys):
  model_dir = str(tmp_path / "run")
  assert official.run(CHECKPOINT, model_dir=model_dir, restore_optimizer=True) == 0
  assert "assigned 375 variables" in capsys.readouterr().out  # 169 + 206 Adam slots
  config = run_dir.read_config(model_dir)
  assert config.model == official.official_model_config(CHECKPOINT)
  assert config.train.g_first and config.model.sn_gradient == "official"
  # The objects the trainer builds restore with its own check.
  generator, discriminator = build_from_config(config.model)
  g_optimizer, d_optimizer = make_optimizers(config.optimizer)
  g_optimizer.build(generator.trainable_variables)
  d_optimizer.build(discriminator.trainable_variables)
  step = tf.Variable(0, dtype=tf.int64)
  checkpoint = run_dir.make_checkpoint(generator, discriminator, g_optimizer, d_optimizer,
                                       step=step, rng=tf.random.Generator.from_seed(0))
  status = checkpoint.restore(run_dir.latest_checkpoint(model_dir))
  status.assert_existing_objects_matched().expect_partial()  # save_counter is not restored
  assert int(step.numpy()) == 1
  assert int(g_optimizer.iterations.numpy()) == int(d_optimizer.iterations.numpy()) == 1
  reader = tf.train.load_checkpoint(CHECKPOINT)
  mapping = official.official_variable_map(generator, discriminator)
  for name in ("model/g_block3/cbn_1/var", "model/d_embedding/u", "model/g_non_local/sigma_ratio"):
    np.testing.assert_array_equal(np.asarray(mapping[name]).ravel(),
                                  reader.get_tensor(name).ravel(), err_msg=name)
  m, v = official.adam_slots(d_optimizer, mapping["model/d_block3/sn_conv1/w"])
  np.testing.assert_array_equal(np.asarray(m), reader.get_tensor("model/d_block3/sn_conv1/w/Adam"))
  np.testing.assert_array_equal(np.asarray(v),
                                reader.get_tensor("model/d_block3/sn_conv1/w/Adam_1"))
  # A second conversion into the same run directory is refused.
  assert official.run(CHECKPOINT, model_dir=model_dir) == 2
  assert "already holds a run" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# The full-size official listing.


@needs_listing
def test_full_size_listing_maps_onto_build_sagan():
  with open(FULL_SIZE) as f:
    listing = json.load(f)
  generator, discriminator = build_sagan(128, 1000)
  entries = {e.name: e for e in official.official_entries(generator, discriminator)}
  official_vars = {name: (tuple(shape), trainable)
                   for name, shape, trainable in listing["variables"] if name.startswith("model/")}
  assert set(entries) == set(official_vars)
  for name, (shape, trainable) in official_vars.items():
    entry = entries[name]
    assert entry.shape == shape, name
    assert int(np.prod(entry.variable.shape)) == int(np.prod(shape)), name
    assert entry.variable.trainable == trainable, name
  totals = listing["totals"]
  for prefix, model in (("G", generator), ("D", discriminator)):
    model_entries = [e for e in entries.values() if e.name.startswith(f"model/{prefix.lower()}_")]
    sizes = [int(np.prod(e.shape)) for e in model_entries]
    trainable = [e.variable.trainable for e in model_entries]
    assert len(model_entries) == totals[f"{prefix}_variables"]
    assert sum(n for n, t in zip(sizes, trainable) if t) == totals[f"{prefix}_trainable"]
    assert sum(n for n, t in zip(sizes, trainable) if not t) == totals[f"{prefix}_non_trainable"]
  # The rest of an official checkpoint is bookkeeping the loaders skip by name.
  others = {name for name, _, _ in listing["other_checkpoint_variables"]}
  assert others == set(official.COUNTERS + official.D_BETA_POWERS + official.G_BETA_POWERS)
  # Nothing of ours is left out but the `sigma` diagnostics.
  covered = {id(e.variable) for e in entries.values()}
  for variable in generator.variables + discriminator.variables:
    assert id(variable) in covered or variable.path.endswith("/sigma"), variable.path



# ----------------------------------------------------------------------------
# Semantics the loaders rely on.


def test_official_forward_is_bit_identical_to_autodiff():
  """gradient="official" changes only gradients, never the forward value."""
  outputs = []
  for mode in ("autodiff", "official"):
    keras.utils.set_random_seed(5)
    layer = SpectralNormalization(keras.layers.Dense(7), gradient=mode)
    x = np.random.default_rng(0).normal(size=(3, 11)).astype(np.float32)
    outputs.append(np.asarray(layer(x, training=True)))
  np.testing.assert_array_equal(outputs[0], outputs[1])



def test_official_preset_matches_loader_semantics():
  model = presets.official().model
  assert (model.sn_gradient, model.g_bn_bessel, model.bn_epsilon, model.cbn_momentum,
          model.g_bn_momentum) == ("official", True, 1e-5, 0.999, 0.9999)
