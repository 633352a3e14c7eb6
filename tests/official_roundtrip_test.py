"""Official and TF-GAN format checkpoints written from our own models and read back; load errors.

No fixture needed: official_parity_test.py holds the comparisons with the recorded official run.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from sagan_tf import official
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.models import build_sagan

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
