"""Tests of the generator and discriminator: shapes, official sizes, config and distribution."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.configs import ModelConfig
from sagan_tf.losses import discriminator_hinge_loss
from sagan_tf.models import (Discriminator, build_from_config, build_sagan, count_parameters,
                             get_architecture)

FIXTURES = os.environ.get("SAGAN_PARITY_FIXTURES", "/work/shared/fixtures/official_parity")
NUM_CLASSES = 5
BATCH = 2

# The smallest widths that give SelfAttention its 8 channels: the G channel
# multiplier at the attention resolution is 4 (32 px: 16x16), 2 (64 px: 32x32),
# 4 (128 px: 32x32), 4 (256 px: 64x64); D's is 4, 1, 2, 2.
TINY_WIDTHS = {32: (2, 2), 64: (4, 8), 128: (2, 4), 256: (2, 4)}


def inputs(rng, image_size=32, z_dim=128, batch=BATCH, num_classes=NUM_CLASSES):
  z = rng.normal(size=(batch, z_dim)).astype(np.float32)
  labels = rng.integers(0, num_classes, size=batch) if num_classes else None
  images = rng.uniform(-1, 1, size=(batch, image_size, image_size, 3)).astype(np.float32)
  return z, labels, images


@pytest.mark.parametrize("image_size", [32, 64, 128, 256])
def test_output_shapes_ranges_and_attention_resolution(image_size, rng):
  g_width, d_width = TINY_WIDTHS[image_size]
  generator, discriminator = build_sagan(image_size, NUM_CLASSES, g_width, d_width=d_width)
  z, labels, _ = inputs(rng, image_size)
  images, attention = generator(z, labels, training=True, return_attention=True)
  assert images.shape == (BATCH, image_size, image_size, 3) and images.dtype == tf.float32
  assert np.all(np.abs(images) <= 1.0)
  assert np.std(images) > 1e-3  # not a constant or saturated image
  # Attention over N = r^2 query pixels and N/4 pooled keys at the architecture's resolution.
  resolution = get_architecture(image_size).attention_resolution
  assert attention.shape == (BATCH, resolution**2, resolution**2 // 4)
  logits = discriminator(images, labels, training=True)
  assert logits.shape == (BATCH,) and logits.dtype == tf.float32
  assert np.all(np.isfinite(logits))
  assert float(logits[0]) != float(logits[1])


def test_width_too_small_for_attention_raises():
  with pytest.raises(ValueError, match="8 channels"):
    build_sagan(128, NUM_CLASSES, width=1, d_width=4)


def record_attention_inputs(monkeypatch, model):
  """Shapes of the tensors the model's SelfAttention receives."""
  shapes = []
  original = model.attention.call

  def spy(features, *args, **kwargs):
    shapes.append(tuple(features.shape))
    return original(features, *args, **kwargs)

  monkeypatch.setattr(model.attention, "call", spy)
  return shapes


def test_attention_follows_third_generator_and_second_discriminator_block(monkeypatch, rng):
  width = 4
  generator, discriminator = build_sagan(128, NUM_CLASSES, width)
  g_shapes = record_attention_inputs(monkeypatch, generator)
  d_shapes = record_attention_inputs(monkeypatch, discriminator)
  z, labels, images = inputs(rng, 128)
  generator(z, labels, training=False)
  discriminator(images, labels, training=False)
  # Official generator_test: g_block3 output, 32x32 with 4*width channels;
  # discriminator_test: d_block2 output, 32x32 with 2*width channels.
  assert g_shapes == [(BATCH, 32, 32, 4 * width)]
  assert d_shapes == [(BATCH, 32, 32, 2 * width)]
  assert generator.blocks[generator._attention_after].name == "g_block3"
  assert discriminator.blocks[discriminator._attention_after].name == "d_block2"


def randomize(variables, rng):
  """Random values, so a dropped bias or an unused table shows in the outputs."""
  for variable in variables:
    values = 0.3 * rng.normal(size=variable.shape)
    if variable.path.endswith(("gamma", "moving_variance")):
      values = 1.0 + np.abs(values)  # scales and variances stay positive
    variable.assign(values)


def test_generator_stem_and_head_match_numpy(rng, np_ref):
  generator, _ = build_sagan(32, NUM_CLASSES, width=2, z_dim=16)
  randomize(generator.g_snh0.weights + generator.g_bn.weights + generator.g_snconv_last.weights, rng)
  z, labels, _ = inputs(rng, z_dim=16)
  # Stem: SN linear, reshaped row-major to [B, 4, 4, C] (official L199-200; C = 4 * width at 32 px).
  kernel, _, _ = np_ref.sn_kernel(generator.g_snh0)
  h = (np.asarray(z, np.float64) @ kernel + generator.g_snh0.layer.bias.numpy()).reshape(BATCH, 4, 4, 8)
  for index, block in enumerate(generator.blocks):
    h = block(h.astype(np.float32), labels, training=False).numpy()
    if index == generator._attention_after:
      h = generator.attention(h, training=False).numpy()
  # Head: batch norm on moving statistics, ReLU, SN conv3x3 to RGB, tanh.
  bn = generator.g_bn
  h = np_ref.batch_norm(np.asarray(h, np.float64), bn.moving_mean.numpy(), bn.moving_variance.numpy(),
                        bn.gamma.numpy(), bn.beta.numpy(), bn.epsilon)
  kernel, _, _ = np_ref.sn_kernel(generator.g_snconv_last)
  expected = np.tanh(np_ref.conv2d_same(np.maximum(h, 0.0), kernel,
                                        generator.g_snconv_last.layer.bias.numpy()))
  np.testing.assert_allclose(generator(z, labels, training=False), expected, rtol=1e-4, atol=1e-5)


def head_reference(discriminator, images, labels, np_ref):
  """(dtype of the block features, float64 logits of D's head computed from them in NumPy)."""
  h = images
  for index, block in enumerate(discriminator.blocks):
    h = block(h, training=False)
    if index == discriminator._attention_after:
      h = discriminator.attention(h, training=False)
  features_dtype = h.dtype
  # ReLU, sum (not mean) over H and W, SN linear plus <SN embedding[y], h> (Miyato & Koyama Eq. 3).
  h = np.maximum(np.asarray(h, np.float64), 0.0).sum(axis=(1, 2))
  kernel, _, _ = np_ref.sn_kernel(discriminator.d_sn_linear)
  embedding, _, _ = np_ref.sn_kernel(discriminator.d_embedding)
  return features_dtype, ((h @ kernel)[:, 0] + discriminator.d_sn_linear.layer.bias.numpy()[0]
                          + np.sum(embedding[labels] * h, axis=1))


def test_discriminator_head_is_sum_pooling_linear_and_projection(rng, np_ref):
  _, discriminator = build_sagan(32, NUM_CLASSES, width=2)
  randomize(discriminator.d_sn_linear.weights + discriminator.d_embedding.weights, rng)
  _, labels, images = inputs(rng)
  _, expected = head_reference(discriminator, images, labels, np_ref)
  np.testing.assert_allclose(discriminator(images, labels, training=False), expected,
                             rtol=1e-4, atol=1e-5)


def official_name(path):
  """Maps a variable path to the official checkpoint name (official-sagan.md section 10)."""
  parts = ["model"] + path.split("/")[1:]
  leaf = parts[-1]
  if parts[-2] == parts[-3]:  # the SN wrapper and its inner layer share a name
    scope = parts[:-2]
    dense = scope[-1] in ("g_snh0", "d_sn_linear")
    leaf = {"kernel": "Matrix" if dense else "w", "bias": "bias" if dense else "biases",
            "embeddings": "embedding_map"}[leaf]
    return "/".join(scope + [leaf])
  if parts[-2].endswith("non_local") and leaf == "gamma":
    leaf = "sigma_ratio"
  if parts[-2].startswith("cbn_"):
    leaf = {"moving_mean": "mean", "moving_variance": "var"}.get(leaf, leaf)
  return "/".join(parts[:-1] + [leaf])


@pytest.mark.slow
def test_full_size_model_has_the_official_parameters():
  generator, discriminator = build_sagan(128, 1000)
  assert count_parameters(generator) == 42_078_852
  assert count_parameters(discriminator) == 39_463_618
  assert len(generator.trainable_variables) == 61
  assert len(discriminator.trainable_variables) == 42

  path = os.path.join(FIXTURES, "full_size_variables.json")
  if not os.path.exists(path):
    pytest.skip(f"no official variable list at {path}")
  with open(path) as f:
    official = {name: (tuple(shape), trainable) for name, shape, trainable in json.load(f)["variables"]}
  ours = {}
  for variable in generator.variables + discriminator.variables:
    if variable.path.endswith("/sigma"):
      continue  # logged sigma, no official counterpart
    ours[official_name(variable.path)] = (tuple(variable.shape), variable.trainable)
  assert sorted(ours) == sorted(official)
  for name, (shape, trainable) in official.items():
    our_shape, our_trainable = ours[name]
    assert our_trainable == trainable, name
    # Official CBN statistics are [1, 1, 1, C], ours [C].
    assert our_shape == shape or (our_shape == shape[-1:] and np.prod(shape) == shape[-1]), name


def test_unconditional_models_have_no_class_variables(rng):
  generator, discriminator = build_sagan(32, 0, width=2)
  assert discriminator.d_embedding is None
  assert not any("embedding" in v.path for v in discriminator.variables)
  for variable in generator.variables:
    if variable.path.endswith(("gamma", "beta")) and "non_local" not in variable.path:
      assert len(variable.shape) == 1, variable.path  # plain BN, no per-class table
  z, _, _ = inputs(rng, num_classes=0)
  images = generator(z, None, training=True)
  logits = discriminator(images, None, training=True)
  assert images.shape == (BATCH, 32, 32, 3) and logits.shape == (BATCH,)


def test_conditional_models_require_labels(rng):
  generator, discriminator = build_sagan(32, NUM_CLASSES, width=2)
  z, _, images = inputs(rng)
  with pytest.raises(ValueError, match="labels"):
    generator(z, training=False)
  with pytest.raises(ValueError, match="labels"):
    discriminator(images, training=False)


def test_labels_change_both_models_outputs(rng):
  generator, discriminator = build_sagan(32, NUM_CLASSES, width=2)
  for variable in generator.trainable_variables + discriminator.trainable_variables:
    if "cbn" in variable.path:  # identical initial class tables would hide the labels
      variable.assign(variable.numpy() + rng.normal(size=variable.shape))
  z, _, images = inputs(rng)
  z = np.repeat(z[:1], 2, axis=0)
  images = np.repeat(images[:1], 2, axis=0)
  labels = np.array([1, 3])
  generated = generator(z, labels, training=False)
  assert np.abs(generated[0] - generated[1]).max() > 1e-4
  logits = discriminator(images, labels, training=False)
  assert abs(float(logits[0] - logits[1])) > 1e-4


def test_config_round_trip_gives_identical_outputs(rng):
  # Mixed precision, so the round trip must carry the dtype policy too.
  generator, discriminator = build_sagan(
      32, NUM_CLASSES, width=2, z_dim=16, sn_gradient="stop", cbn_momentum=0.9, g_bn_bessel=True,
      dtype="mixed_bfloat16")
  z, labels, images = inputs(rng, z_dim=16)
  for model, args in ((generator, (z, labels)), (discriminator, (images, labels))):
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.dtype_policy.name == model.dtype_policy.name
    clone(*args, training=False)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(*args, training=False), model(*args, training=False))
    np.testing.assert_array_equal(clone(*args, training=True), model(*args, training=True))


def test_build_from_config_maps_every_field():
  config = ModelConfig(image_size=32, num_classes=7, g_width=2, d_width=4, z_dim=16,
                       sn_gradient="official", sn_power_iterations=3, sn_epsilon=1e-8,
                       bn_epsilon=1e-3, cbn_momentum=0.9, g_bn_momentum=0.99, g_bn_bessel=True,
                       sync_batch_norm=True)
  generator, discriminator = build_from_config(config, build=False)
  assert (generator.image_size, generator.num_classes, generator.width, generator.z_dim) == (32, 7, 2, 16)
  assert (discriminator.image_size, discriminator.num_classes, discriminator.width) == (32, 7, 4)
  sn_options = {"power_iterations": 3, "gradient": "official", "epsilon": 1e-8, "relaxed": False}
  assert generator.sn_options == sn_options and discriminator.sn_options == sn_options
  cbn = generator.blocks[0].cbn_0
  assert (cbn.momentum, cbn.epsilon, cbn.synchronized, cbn.bessel_moving_variance) == (0.9, 1e-3, True, False)
  assert (generator.g_bn.momentum, generator.g_bn.epsilon, generator.g_bn.bessel_moving_variance,
          generator.g_bn.synchronized) == (0.99, 1e-3, True, True)
  assert generator.g_snh0.power_iterations == 3 and discriminator.d_embedding.gradient == "official"


def test_mirrored_discriminator_step_equals_single_device(mirrored_strategy, per_replica, rng):
  kwargs = {"image_size": 32, "num_classes": NUM_CLASSES, "width": 2}
  _, labels, real = inputs(rng, batch=4)
  fake = rng.uniform(-1, 1, size=real.shape).astype(np.float32)
  single = Discriminator(**kwargs)
  single(real, labels, training=False)
  with mirrored_strategy.scope():
    mirrored = Discriminator(**kwargs)
    mirrored(real, labels, training=False)
  mirrored.set_weights(single.get_weights())
  for model in (single, mirrored):  # a non-zero gamma puts attention in the gradient path
    model.attention.gamma.assign(0.5)

  def loss_and_gradients(model, real, fake, labels, loss_scale):
    with tf.GradientTape() as tape:
      real_logits = model(real, labels, training=True)
      fake_logits = model(fake, labels, training=False)
      loss = discriminator_hinge_loss(real_logits, fake_logits)[0] * loss_scale
    return loss, tape.gradient(loss, model.trainable_variables)

  expected_loss, expected_gradients = loss_and_gradients(single, real, fake, labels, 1.0)

  @tf.function(jit_compile=False)
  def replica_step(real, labels, fake):
    # The all-reduce sums, so each replica's mean loss is divided by the replica count.
    return loss_and_gradients(mirrored, real, fake, labels,
                              1.0 / mirrored_strategy.num_replicas_in_sync)

  losses, gradients = mirrored_strategy.run(replica_step,
                                            args=per_replica.split(mirrored_strategy, real, labels, fake))
  total = mirrored_strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
  np.testing.assert_allclose(total, expected_loss, rtol=1e-5)
  assert len(gradients) == len(expected_gradients) == len(mirrored.trainable_variables)
  for variable, gradient, expected in zip(mirrored.trainable_variables, gradients,
                                          expected_gradients):
    summed = mirrored_strategy.reduce(tf.distribute.ReduceOp.SUM, gradient, axis=None).numpy()
    scale = np.abs(expected).max()
    assert scale > 0, variable.path
    np.testing.assert_allclose(summed, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=variable.path)
  for ours, theirs in zip(mirrored.non_trainable_variables, single.non_trainable_variables):
    for local in per_replica.local(mirrored_strategy, ours):
      np.testing.assert_allclose(local, theirs.numpy(), rtol=1e-5, atol=1e-6, err_msg=ours.path)


def test_float16_discriminator_projects_in_float32(rng, np_ref):
  # Under mixed_float16 the blocks run in float16; the sum pooling, the linear
  # layer and the class projection must run in float32: a float16 dot
  # product would be off by ~1e-3 relative, far outside the tolerance.
  _, discriminator = build_sagan(32, NUM_CLASSES, width=2, dtype="mixed_float16")
  randomize(discriminator.d_sn_linear.weights + discriminator.d_embedding.weights, rng)
  _, labels, images = inputs(rng)
  features_dtype, expected = head_reference(discriminator, images, labels, np_ref)
  assert features_dtype == tf.float16
  logits = discriminator(images, labels, training=False)
  assert logits.dtype == tf.float32
  np.testing.assert_allclose(logits, expected, rtol=2e-6, atol=1e-6)
