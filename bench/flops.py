"""Analytic FLOPs of SAGAN's generator, discriminator and one training iteration, from the architecture data."""

import dataclasses

from sagan_tf.models.architectures import get_architecture


@dataclasses.dataclass(frozen=True)
class Layer:
  """One multiply-add heavy operation of a model.

  Attributes:
    model: "G" or "D".
    name: the layer's scope, as the models name it (g_block1/snconv1, ...).
    macs: multiply-adds per image in the forward pass.
    kernel_params: scalars of the spectrally normalised kernel (0 for the
      attention matmuls, which have no weights).
  """
  model: str
  name: str
  macs: int
  kernel_params: int


def _conv(model, name, resolution, kernel, c_in, c_out):
  return Layer(model, name, resolution * resolution * kernel * kernel * c_in * c_out,
               kernel * kernel * c_in * c_out)


def _attention(model, scope, resolution, channels):
  """The four 1x1 convs and two batched matmuls of `SelfAttention` (keys max-pooled 2x2)."""
  positions, keys = resolution * resolution, resolution * resolution // 4
  return [
      _conv(model, f"{scope}/sn_conv_theta", resolution, 1, channels, channels // 8),
      # phi and g are convolved at full resolution, then pooled.
      _conv(model, f"{scope}/sn_conv_phi", resolution, 1, channels, channels // 8),
      _conv(model, f"{scope}/sn_conv_g", resolution, 1, channels, channels // 2),
      Layer(model, f"{scope}/theta_phi", positions * keys * (channels // 8), 0),
      Layer(model, f"{scope}/beta_g", positions * keys * (channels // 2), 0),
      _conv(model, f"{scope}/sn_conv_attn", resolution, 1, channels // 2, channels),
  ]


def generator_layers(image_size, width, z_dim=128, attention_resolution=0):
  """The generator's convolutions, linear layers and attention matmuls, in call order."""
  architecture = get_architecture(image_size)
  attention_resolution = attention_resolution or architecture.attention_resolution
  channels = [m * width for m in architecture.g_channels]
  layers = [Layer("G", "g_snh0", z_dim * 16 * channels[0], z_dim * 16 * channels[0])]
  resolution = 4
  for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
    resolution *= 2
    scope = f"g_block{index + 1}"
    layers += [_conv("G", f"{scope}/snconv1", resolution, 3, c_in, c_out),
               _conv("G", f"{scope}/snconv2", resolution, 3, c_out, c_out),
               _conv("G", f"{scope}/snconv3", resolution, 1, c_in, c_out)]
    if resolution == attention_resolution:
      layers += _attention("G", "g_non_local", resolution, c_out)
  layers.append(_conv("G", "g_snconv_last", image_size, 3, channels[-1], 3))
  return layers


def discriminator_layers(image_size, width, num_classes=1000, attention_resolution=0):
  """The discriminator's convolutions, linear layers and attention matmuls, in call order."""
  architecture = get_architecture(image_size)
  attention_resolution = attention_resolution or architecture.attention_resolution
  layers, attended = [], False
  c_in, resolution = 3, image_size
  for index, (multiplier, down) in enumerate(zip(architecture.d_channels,
                                                architecture.d_downsample)):
    c_out = multiplier * width
    if index == 0:
      scope = "d_optimized_block1"
      layers += [_conv("D", f"{scope}/sn_conv1", resolution, 3, c_in, c_out),
                 _conv("D", f"{scope}/sn_conv2", resolution, 3, c_out, c_out),
                 # The optimised block pools before its shortcut conv.
                 _conv("D", f"{scope}/sn_conv3", resolution // 2, 1, c_in, c_out)]
    else:
      scope = f"d_block{index + 1}"
      layers += [_conv("D", f"{scope}/sn_conv1", resolution, 3, c_in, c_out),
                 _conv("D", f"{scope}/sn_conv2", resolution, 3, c_out, c_out)]
      if down or c_in != c_out:
        layers.append(_conv("D", f"{scope}/sn_conv3", resolution, 1, c_in, c_out))
    resolution = resolution // 2 if down else resolution
    c_in = c_out
    if resolution == attention_resolution and not attended:
      attended = True
      layers += _attention("D", "d_non_local", resolution, c_out)
  layers.append(Layer("D", "d_sn_linear", c_in, c_in))
  if num_classes:
    # The projection <embed(y), h>; the SN table holds num_classes x C scalars.
    layers.append(Layer("D", "d_embedding", c_in, num_classes * c_in))
  return layers


def model_layers(model_config):
  """Generator then discriminator layers of a `ModelConfig`."""
  return (generator_layers(model_config.image_size, model_config.g_width, model_config.z_dim,
                           model_config.g_attention_resolution) +
          discriminator_layers(model_config.image_size, model_config.d_width,
                               model_config.num_classes, model_config.d_attention_resolution))


def iteration_flops(model_config, batch_size, d_steps=1):
  """FLOPs (2 x multiply-adds) of one training iteration, per iteration and per real image.

  One iteration is `d_steps` D updates and one G update on a batch of B:
  a D update runs G forward on B and D forward and backward on the 2B real
  and fake images; the G update runs G forward and backward and D forward and
  backward to its input (no D weight gradients) on B. A backward pass is
  counted as 2x its forward (input and weight gradients), D's input-only
  backward as 1x. The spectral norm's power iteration (u W^T, v W and
  sigma = v W u^T: 3 multiply-adds per kernel scalar per call, and 2x that
  backward where the kernel gets a gradient) does not scale with the batch.
  Batch norm, activations, pooling, resampling and Adam are left out: they
  are memory-bound and small in multiply-adds.

  Returns:
    A dict of numbers: g_forward_flops and d_forward_flops per image,
    g_kernel_params and d_kernel_params, d_update_flops and g_update_flops
    per update on the batch, flops_per_iteration, and flops_per_image (per
    real image, i.e. per iteration divided by d_steps * B).
  """
  layers = model_layers(model_config)
  g_macs = sum(layer.macs for layer in layers if layer.model == "G")
  d_macs = sum(layer.macs for layer in layers if layer.model == "D")
  g_params = sum(layer.kernel_params for layer in layers if layer.model == "G")
  d_params = sum(layer.kernel_params for layer in layers if layer.model == "D")
  b = batch_size
  # Forward SN in G and D per update; backward SN where the kernels get gradients.
  d_update = 2 * (g_macs * b + 3 * d_macs * 2 * b + 3 * (g_params + d_params) + 6 * d_params)
  g_update = 2 * (3 * g_macs * b + 2 * d_macs * b + 3 * (g_params + d_params) + 6 * g_params)
  per_iteration = d_steps * d_update + g_update
  return {
      "g_forward_flops": 2 * g_macs,
      "d_forward_flops": 2 * d_macs,
      "g_kernel_params": g_params,
      "d_kernel_params": d_params,
      "d_update_flops": d_update,
      "g_update_flops": g_update,
      "flops_per_iteration": per_iteration,
      "flops_per_image": per_iteration / (d_steps * b),
  }


def forward_flops(model_config, batch_size, model):
  """Analytic FLOPs of one forward call of G or D on a batch, power iteration included."""
  layers = [layer for layer in model_layers(model_config) if layer.model == model]
  macs = sum(layer.macs for layer in layers) * batch_size
  return 2 * (macs + 3 * sum(layer.kernel_params for layer in layers))


# Op types whose float ops are the multiply-adds counted above; the rest are elementwise.
MATMUL_OP_TYPES = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
                   "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def profile_float_ops(concrete_function):
  """TF's own float-op count of a concrete function's graph, by op type.

  Uses `tf.compat.v1.profiler`, which counts registered op statistics (2
  per multiply-add for convolutions and matmuls, 1 per element for
  elementwise ops) and needs static shapes. It counts the graph as traced,
  before grappler prunes gradients nobody uses: the G update's graph still
  holds D's kernel gradients, one D forward's worth more than is run.

  Returns:
    (total, matmul_total, {op_type: float_ops}).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  options = (tf.compat.v1.profiler.ProfileOptionBuilder(
      tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
             .with_empty_output().build())
  result = tf.compat.v1.profiler.profile(concrete_function.graph, cmd="op", options=options)
  # In the op view each child's total_float_ops also holds the children listed
  # after it; float_ops is the op type's own count.
  by_type = {}
  pending = list(result.children)
  while pending:
    child = pending.pop()
    if child.float_ops:
      by_type[child.name] = by_type.get(child.name, 0) + int(child.float_ops)
    pending.extend(child.children)
  matmul = sum(v for k, v in by_type.items() if k in MATMUL_OP_TYPES)
  return int(result.total_float_ops), matmul, by_type
