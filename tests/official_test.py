"""Parity with the official TF1 SAGAN: checkpoint loading, one training step, conversion, TF-GAN."""

import json
import os
import subprocess
import sys

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


def _small_models(image_size=32, num_classes=5, width=8, z_dim=16, **kwargs):
  return build_sagan(image_size, num_classes, width, z_dim, sn_gradient="official",
                     g_bn_bessel=True, **kwargs)


def _randomize(models, seed=0):
  """Gives every variable distinct values, so a mix-up of two variables shows."""
  rng = np.random.default_rng(seed)
  for model in models:
    for variable in model.variables:
      value = rng.normal(size=variable.shape).astype(np.float32)
      if "variance" in variable.path:
        value = np.abs(value) + 0.5
      variable.assign(value)


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
# Other configurations, written in the official format from our own models.


@pytest.mark.parametrize("image_size,num_classes", [(32, 5), (64, 0)])
def test_round_trip_other_sizes(tmp_path, image_size, num_classes):
  generator, discriminator = _small_models(image_size, num_classes)
  _randomize((generator, discriminator))
  g_optimizer, d_optimizer = official.make_official_optimizers()
  rng = np.random.default_rng(1)
  for model, optimizer in ((generator, g_optimizer), (discriminator, d_optimizer)):
    optimizer.build(model.trainable_variables)
    for variable in model.trainable_variables:
      for slot in official.adam_slots(optimizer, variable):
        slot.assign(np.abs(rng.normal(size=slot.shape)).astype(np.float32))
  g_optimizer.iterations.assign(7)
  # 0.999^200001 underflows float32: the d_step counter gives the count.
  d_optimizer.iterations.assign(200_000)
  prefix = official.save_official(generator, discriminator, str(tmp_path / "model.ckpt-7"),
                                  g_optimizer=g_optimizer, d_optimizer=d_optimizer, step=7)
  loaded = official.load_official(prefix + ".index", restore_optimizer_slots=True)
  config = loaded.model_config
  assert (config.image_size, config.num_classes, config.g_width, config.d_width, config.z_dim) == (
      image_size, num_classes, 8, 8, 16)
  ours = official.official_variable_map(generator, discriminator)
  theirs = official.official_variable_map(loaded.generator, loaded.discriminator)
  assert set(ours) == set(theirs)
  for name in ours:
    np.testing.assert_array_equal(np.asarray(theirs[name]), np.asarray(ours[name]), err_msg=name)
  pairs = ((generator, g_optimizer, loaded.generator, loaded.g_optimizer),
           (discriminator, d_optimizer, loaded.discriminator, loaded.d_optimizer))
  for model, optimizer, new_model, new_optimizer in pairs:
    for variable, new_variable in zip(model.trainable_variables, new_model.trainable_variables):
      for slot, new_slot in zip(official.adam_slots(optimizer, variable),
                                official.adam_slots(new_optimizer, new_variable)):
        np.testing.assert_array_equal(np.asarray(new_slot), np.asarray(slot))
  assert int(loaded.g_optimizer.iterations.numpy()) == 7
  assert int(loaded.d_optimizer.iterations.numpy()) == 200_000
  assert any("beta2_power underflowed" in note for note in loaded.report.notes)
  assert loaded.step == 7
  images = loaded.generator(np.zeros((2, 16), np.float32), np.zeros((2,), np.int32) if num_classes
                            else None)
  assert images.shape == (2, image_size, image_size, 3)


@pytest.fixture(scope="module")
def small_values():
  keras.utils.set_random_seed(3)
  generator, discriminator = _small_models()
  return official.official_checkpoint_values(generator, discriminator, step=3)


def test_missing_variable_is_named(tmp_path, small_values):
  values = dict(small_values)
  del values["model/g_block2/snconv1/w"]
  prefix = official.write_checkpoint(str(tmp_path / "ckpt"), values)
  with pytest.raises(official.OfficialCheckpointError, match="model/g_block2/snconv1/w"):
    official.load_official(prefix)


def test_misshapen_variable_is_named(tmp_path, small_values):
  values = dict(small_values)
  values["model/d_block2/sn_conv1/u"] = np.zeros((1, 7), np.float32)
  prefix = official.write_checkpoint(str(tmp_path / "ckpt"), values)
  message = r"model/d_block2/sn_conv1/u \(checkpoint \[1, 7\], expected \[1, 32\]\)"
  with pytest.raises(official.OfficialCheckpointError, match=message):
    official.load_official(prefix)


def test_unexpected_variable_raises_unless_not_strict(tmp_path, small_values):
  values = dict(small_values, **{"model/g_extra/w": np.zeros((2,), np.float32)})
  prefix = official.write_checkpoint(str(tmp_path / "ckpt"), values)
  with pytest.raises(official.OfficialCheckpointError, match="model/g_extra/w"):
    official.load_official(prefix)
  report = official.load_official(prefix, strict=False).report
  assert report.skipped["model/g_extra/w"] == "not a variable of these models"


def test_missing_adam_slot_is_named(tmp_path, small_values):
  prefix = official.write_checkpoint(str(tmp_path / "ckpt"), small_values)
  with pytest.raises(official.OfficialCheckpointError, match=r"model/g_snh0/Matrix/Adam\b"):
    official.load_official(prefix, restore_optimizer_slots=True)


def test_unreadable_checkpoints_are_one_line_errors(tmp_path, capsys):
  not_a_checkpoint = tmp_path / "model.ckpt"
  not_a_checkpoint.write_text("hello")
  for path in (str(tmp_path / "absent"), str(not_a_checkpoint), str(tmp_path)):
    with pytest.raises(official.OfficialCheckpointError, match="cannot read checkpoint"):
      official.load_official(path)
    assert official.run(path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read checkpoint") and err.count("\n") == 1


def test_module_entry_point_exit_code(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "sagan_tf.official", f"--checkpoint={tmp_path / 'absent'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "absent" in errors[0]


def test_official_forward_is_bit_identical_to_autodiff():
  """gradient="official" changes only gradients, never the forward value."""
  outputs = []
  for mode in ("autodiff", "official"):
    keras.utils.set_random_seed(5)
    layer = SpectralNormalization(keras.layers.Dense(7), gradient=mode)
    x = np.random.default_rng(0).normal(size=(3, 11)).astype(np.float32)
    outputs.append(np.asarray(layer(x, training=True)))
  np.testing.assert_array_equal(outputs[0], outputs[1])


# ----------------------------------------------------------------------------
# TF-GAN's example.


def _top_singular_vectors(sn):
  kernel = np.asarray(sn.kernel, np.float64)
  w = kernel.T if isinstance(sn.layer, keras.layers.Embedding) else kernel.reshape(
      -1, kernel.shape[-1])
  left, singular, right = np.linalg.svd(w, full_matrices=False)
  return left[:, 0], right[0], singular[0]


def test_tfgan_round_trip(tmp_path):
  generator, discriminator = _small_models()
  _randomize((generator, discriminator))
  values = {"global_step": np.int64(5)}
  for entry in official.tfgan_entries(generator, discriminator):
    if entry.is_u:
      left, _, _ = _top_singular_vectors(entry.sn_layer)
      # TF-GAN's u estimates the left singular vector; the sign is arbitrary.
      values[entry.name] = -left.reshape(entry.shape).astype(np.float32)
    else:
      values[entry.name] = np.asarray(entry.variable).reshape(entry.shape)
      values[f"{entry.name}/Adam"] = values[entry.name]
  assert values["Generator/generator/g_block1/cbn_0/gamma"].shape == (5, 1, 1, 32)
  assert values["Generator/generator/g_bn/gamma"].shape == (1, 1, 1, 32)
  assert ("Generator/generator/g_block1/snconv1/snconv1/Generator/generator/g_block1/snconv1/"
          "snconv1/kernel/spectral_normalize/spectral_norm/spectral_norm_u") in values
  assert values["Discriminator/discriminator/d_embedding/spectral_normalize/spectral_norm/"
                "spectral_norm_u"].shape == (32, 1)
  prefix = official.write_checkpoint(str(tmp_path / "model.ckpt-5"), values)
  loaded = official.load_tfgan(prefix)
  new_g, new_d = loaded
  assert loaded.step == 5
  assert all(name.endswith("/Adam") or name == "global_step" for name in loaded.report.skipped)
  for ours, theirs in zip(generator.variables + discriminator.variables,
                          new_g.variables + new_d.variables):
    assert ours.path == theirs.path
    if ours.path.endswith(("/u", "/sigma")):
      continue
    np.testing.assert_array_equal(np.asarray(theirs), np.asarray(ours), err_msg=ours.path)
  for entry in official.tfgan_entries(new_g, new_d):
    if entry.is_u:
      _, right, sigma = _top_singular_vectors(entry.sn_layer)
      u = np.asarray(entry.sn_layer.u)[0]
      assert abs(np.dot(u, right)) > 1 - 1e-5, entry.name
      assert abs(float(entry.sn_layer.sigma.numpy()) - sigma) < 1e-4 * sigma, entry.name
  # TF-GAN semantics: relaxed SN except in attention, stop-gradient, eps 1e-3.
  attention_convs = {id(c) for m in (new_g, new_d)
                     for c in (m.attention.theta, m.attention.phi, m.attention.g, m.attention.attn)}
  for model in (new_g, new_d):
    for layer in model._flatten_layers():  # pylint: disable=protected-access
      if isinstance(layer, SpectralNormalization):
        assert layer.gradient == "stop"
        assert layer.relaxed == (id(layer) not in attention_convs), layer.name
  assert new_g.blocks[0].cbn_0.epsilon == 1e-3 and new_g.g_bn.momentum == 0.999
  assert not new_g.g_bn.bessel_moving_variance
  images = new_g(np.zeros((2, 16), np.float32), np.array([0, 4], np.int32))
  assert images.shape == (2, 32, 32, 3)


def test_tfgan_without_u_starts_from_random(tmp_path):
  generator, discriminator = _small_models()
  values = {e.name: np.asarray(e.variable).reshape(e.shape)
            for e in official.tfgan_entries(generator, discriminator) if not e.is_u}
  prefix = official.write_checkpoint(str(tmp_path / "ckpt"), values)
  loaded = official.load_tfgan(prefix, power_iterations=3)
  fresh = sum(e.is_u for e in official.tfgan_entries(generator, discriminator))
  assert any(f"({fresh} from a random start)" in note for note in loaded.report.notes)
  del values["Generator/generator/g_bn/gamma"]
  prefix = official.write_checkpoint(str(tmp_path / "ckpt2"), values)
  with pytest.raises(official.OfficialCheckpointError, match="Generator/generator/g_bn/gamma"):
    official.load_tfgan(prefix)


def test_official_preset_matches_loader_semantics():
  model = presets.official().model
  assert (model.sn_gradient, model.g_bn_bessel, model.bn_epsilon, model.cbn_momentum,
          model.g_bn_momentum) == ("official", True, 1e-5, 0.999, 0.9999)
