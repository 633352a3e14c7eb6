"""Tests of the SavedModel export: serving outputs, validation, metadata, plain-TensorFlow clients."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import export
from sagan_tf.models.build import build_sagan

Z_DIM = 16
NUM_CLASSES = 3
CLASS_NAMES = ["cat", "dog", "owl"]
VENV_BIN = os.path.dirname(sys.executable)


def _clean_env():
  env = dict(os.environ)
  # The clients below must not see the repository: an export loads without sagan_tf.
  env.pop("PYTHONPATH", None)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(generator, export_dir, metadata, variables before serving) of a tiny conditional export."""
  tf.keras.utils.set_random_seed(1)
  generator, _ = build_sagan(32, NUM_CLASSES, width=8, z_dim=Z_DIM)
  before = [v.numpy().copy() for v in generator.variables]
  export_dir = str(tmp_path_factory.mktemp("export") / "saved_model")
  metadata = export.export_generator(generator, export_dir, step=7, class_names=CLASS_NAMES,
                                     truncation=1.5, ema=True, dataset="animal_mnist")
  return generator, export_dir, metadata, before


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported[1])


def _inputs(batch=4, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((batch, Z_DIM)).astype(np.float32)
  labels = np.arange(batch) % NUM_CLASSES
  return z, labels


def test_serving_default_matches_keras_inference(exported, loaded):
  generator = exported[0]
  z, labels = _inputs()
  expected = generator(z, labels.astype(np.int32), training=False).numpy()
  images = loaded.signatures["serving_default"](z=tf.constant(z), labels=tf.constant(labels, tf.int64))
  assert set(images) == {"images"}
  np.testing.assert_allclose(images["images"].numpy(), expected, atol=1e-5)
  assert images["images"].shape == (4, 32, 32, 3)
  # The plain function takes int32 labels as well as int64.
  np.testing.assert_allclose(loaded.generate(z, labels.astype(np.int32)).numpy(), expected, atol=1e-5)
  np.testing.assert_allclose(loaded.generate(z, labels).numpy(), expected, atol=1e-5)


def test_uint8_signature_rounds_and_clips(loaded):
  z, labels = _inputs(seed=1)
  inputs = {"z": tf.constant(z), "labels": tf.constant(labels, tf.int64)}
  images = loaded.signatures["serving_default"](**inputs)["images"].numpy()
  images_uint8 = loaded.signatures["generate_uint8"](**inputs)["images"]
  assert images_uint8.dtype == tf.uint8
  expected = np.clip(np.round((images.astype(np.float64) + 1.0) * 127.5), 0, 255)
  # float32 vs float64 rounding may differ by one level right at .5.
  assert np.abs(images_uint8.numpy().astype(np.int64) - expected).max() <= 1
  assert np.mean(images_uint8.numpy() == expected) > 0.999


@pytest.mark.parametrize("bad_label", [NUM_CLASSES, -1])
def test_out_of_range_label_fails_naming_the_range(loaded, bad_label):
  z, labels = _inputs()
  labels[1] = bad_label
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be class indices in \[0, 3\)"):
    loaded.signatures["serving_default"](z=tf.constant(z), labels=tf.constant(labels, tf.int64))


def test_wrong_z_width_or_batch_fails_clearly(loaded):
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must have shape \[batch, 16\]"):
    loaded.signatures["serving_default"](z=tf.zeros((2, Z_DIM - 3)),
                                         labels=tf.constant([0, 1], tf.int64))
  with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
    loaded.signatures["serving_default"](z=tf.zeros((2, Z_DIM)),
                                         labels=tf.constant([0, 1, 2], tf.int64))


def test_serving_changes_no_variable(exported, loaded):
  generator, _, _, before = exported
  z, labels = _inputs(batch=6, seed=2)
  for _ in range(2):
    loaded.signatures["serving_default"](z=tf.constant(z), labels=tf.constant(labels, tf.int64))
    loaded.signatures["sample"](seed=tf.constant(1, tf.int64), batch_size=tf.constant(3, tf.int64))
  after_generator = [v.numpy() for v in generator.variables]
  after_loaded = [v.numpy() for v in loaded.generator_variables]
  assert len(after_generator) == len(after_loaded) == len(before)
  for old, new, served in zip(before, after_generator, after_loaded):
    np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(old, served)


def test_attention_signature_matches_keras(exported, loaded):
  generator = exported[0]
  z, labels = _inputs()
  images, attention = generator(z, labels.astype(np.int32), training=False, return_attention=True)
  outputs = loaded.signatures["attention"](z=tf.constant(z), labels=tf.constant(labels, tf.int64))
  assert outputs["attention"].shape == (4, 16 * 16, 8 * 8)
  np.testing.assert_allclose(outputs["attention"].numpy(), attention.numpy(), atol=1e-5)
  np.testing.assert_allclose(outputs["images"].numpy(), images.numpy(), atol=1e-5)


def test_sample_signature_is_seeded_and_truncated(loaded):
  def sample(seed):
    return loaded.signatures["sample"](seed=tf.constant(seed, tf.int64),
                                       batch_size=tf.constant(64, tf.int64))

  first, again, other = sample(5), sample(5), sample(6)
  np.testing.assert_array_equal(first["images"].numpy(), again["images"].numpy())
  assert not np.array_equal(first["z"].numpy(), other["z"].numpy())
  assert first["images"].shape == (64, 32, 32, 3)
  assert np.abs(first["z"].numpy()).max() <= 1.5
  # Truncation keeps the spread of a normal inside the bounds, not a uniform or a constant.
  assert 0.5 < first["z"].numpy().std() < 1.0
  labels = first["labels"].numpy()
  assert labels.min() >= 0 and labels.max() < NUM_CLASSES and len(set(labels)) == NUM_CLASSES


def test_metadata_round_trip(exported):
  generator, export_dir, metadata, _ = exported
  assert metadata["z_dim"] == Z_DIM and metadata["num_classes"] == NUM_CLASSES
  assert metadata["class_names"] == CLASS_NAMES and metadata["image_size"] == 32
  assert metadata["step"] == 7 and metadata["ema"] is True and metadata["truncation"] == 1.5
  assert metadata["dataset"] == "animal_mnist" and metadata["attention_resolution"] == 16
  import sagan_tf  # pylint: disable=g-import-not-at-top
  assert metadata["sagan_tf_version"] == sagan_tf.__version__
  with open(os.path.join(export_dir, "assets.extra", "sagan_metadata.json")) as f:
    assert json.load(f) == metadata
  assert export.read_metadata(export_dir) == metadata
  restored, restored_metadata = export.load_exported(export_dir)
  assert restored_metadata == metadata
  assert json.loads(restored.module.signatures["get_metadata"]()["metadata"].numpy()) == metadata
  assert (restored.z_dim, restored.num_classes, restored.image_size) == (Z_DIM, NUM_CLASSES, 32)
  z, labels = _inputs()
  expected = generator(z, labels.astype(np.int32), training=False).numpy()
  np.testing.assert_allclose(restored(z, labels.astype(np.int32)).numpy(), expected, atol=1e-5)
  _, attention = restored(z, labels, return_attention=True)
  assert attention.shape == (4, 256, 64)
  with pytest.raises(ValueError, match="conditional"):
    restored(z)


def test_plain_tensorflow_client_loads_without_sagan_tf(exported, tmp_path):
  _, export_dir, metadata, _ = exported
  script = f"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load({export_dir!r})
labels = tf.constant([0, 2], tf.int64)
out = model.signatures["serving_default"](z=tf.zeros((2, {Z_DIM})), labels=labels)
assert out["images"].shape == (2, 32, 32, 3), out["images"].shape
assert json.loads(model.metadata_json.numpy())["z_dim"] == {Z_DIM}
assert "sagan_tf" not in sys.modules
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("ok")


def test_saved_model_cli_run(exported, tmp_path):
  export_dir = exported[1]
  # saved_model_cli evaluates --input_exprs with ast.literal_eval: literals only, no np.* calls.
  z = str([[0.25] * Z_DIM, [-0.5] * Z_DIM])
  command = [os.path.join(VENV_BIN, "saved_model_cli"), "run", "--dir", export_dir,
             "--tag_set", "serve", "--signature_def", "serving_default",
             "--input_exprs", f"z={z};labels=[0, 1]",
             "--outdir", str(tmp_path / "out")]
  result = subprocess.run(command, cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  images = np.load(tmp_path / "out" / "images.npy")
  assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
  assert np.all(np.abs(images) <= 1.0)
  z_array = np.array([[0.25] * Z_DIM, [-0.5] * Z_DIM], np.float32)
  expected = exported[0](z_array, np.array([0, 1], np.int32), training=False)
  np.testing.assert_allclose(images, expected.numpy(), atol=1e-5)


def test_unconditional_export_ignores_labels(tmp_path):
  tf.keras.utils.set_random_seed(2)
  generator, _ = build_sagan(32, 0, width=8, z_dim=Z_DIM)
  export_dir = str(tmp_path / "unconditional")
  metadata = export.export_generator(generator, export_dir)
  assert metadata["num_classes"] == 0 and metadata["class_names"] is None and metadata["ema"] is False
  restored, _ = export.load_exported(export_dir)
  z, _ = _inputs()
  expected = generator(z, None, training=False).numpy()
  np.testing.assert_allclose(restored(z).numpy(), expected, atol=1e-5)
  ignored = restored.module.signatures["serving_default"](
      z=tf.constant(z), labels=tf.constant([7, -1, 0, 99], tf.int64))
  np.testing.assert_allclose(ignored["images"].numpy(), expected, atol=1e-5)


def test_missing_or_corrupt_export_gives_a_clear_error(exported, tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(export.ExportError, match="no SavedModel at .*nowhere"):
    export.load_exported(missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(export.ExportError, match="saved_model.pb not found"):
    export.load_exported(str(empty))
  corrupt = tmp_path / "corrupt"
  shutil.copytree(exported[1], corrupt)
  model_file = corrupt / "saved_model.pb"
  model_file.write_bytes(model_file.read_bytes()[:len(model_file.read_bytes()) // 2])
  with pytest.raises(export.ExportError, match=f"cannot load the SavedModel at {corrupt}"):
    export.load_exported(str(corrupt))


def test_export_refuses_bad_arguments(exported, tmp_path):
  generator = exported[0]
  with pytest.raises(ValueError, match="class_names has 2 names"):
    export.export_generator(generator, str(tmp_path / "a"), class_names=["x", "y"])
  with pytest.raises(ValueError, match="truncation"):
    export.export_generator(generator, str(tmp_path / "b"), truncation=-1.0)


def test_mixed_precision_generator_exports_in_float32(tmp_path):
  """A bfloat16-trained generator serves its weights at float32 precision."""
  mixed, _ = build_sagan(32, NUM_CLASSES, width=8, z_dim=Z_DIM, dtype="mixed_bfloat16")
  plain, _ = build_sagan(32, NUM_CLASSES, width=8, z_dim=Z_DIM)
  plain.set_weights(mixed.get_weights())
  z = np.random.default_rng(3).standard_normal((4, Z_DIM)).astype(np.float32)
  labels = np.array([0, 1, 2, 0])
  export.export_generator(mixed, str(tmp_path / "export"))
  served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](
      z=tf.constant(z), labels=tf.constant(labels, tf.int64))["images"].numpy()
  reference = plain(z, labels, training=False).numpy()
  np.testing.assert_allclose(served, reference, atol=1e-6)
  # bfloat16 itself is farther off: the comparison above can tell them apart.
  assert np.abs(mixed(z, labels, training=False).numpy() - reference).max() > 1e-4
