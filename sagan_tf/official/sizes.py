"""Model sizes (image size, classes, widths, z_dim, attention positions) from variable shapes."""

import dataclasses
import re

from sagan_tf.configs import presets
from sagan_tf.models.architectures import ARCHITECTURES, get_architecture
from sagan_tf.official.reader import OfficialCheckpointError, open_checkpoint

# The official TF1 code's names of the variables the sizes are read from; see `infer_sizes`.
OFFICIAL_NAMES = {
    "g_block_regex": r"^model/g_block(\d+)/",
    "g_dense": "model/g_snh0/Matrix",
    "g_last": "model/g_snconv_last/w",
    "d_first": "model/d_optimized_block1/sn_conv1/w",
    "cbn_gamma": "model/g_block1/cbn_0/gamma",
    "conditional": lambda shape: len(shape) == 2,
    "embedding": "model/d_embedding/embedding_map",
    "g_theta": "model/g_non_local/sn_conv_theta/w",
    "d_theta": "model/d_non_local/sn_conv_theta/w",
}


def _shape(shapes, name, path):
  if name not in shapes:
    raise OfficialCheckpointError(f"checkpoint {path} has no variable {name}")
  return shapes[name]


def _attention_resolution(channels, block_channels, block_resolutions, default, where):
  """The feature-map size whose block output has `channels` channels (the default if it fits)."""
  candidates = [r for c, r in zip(block_channels, block_resolutions) if c == channels]
  if default in candidates or not candidates:
    if not candidates:
      raise OfficialCheckpointError(f"{where}: no block outputs {channels} channels")
    return default
  return candidates[0]


def _architecture(shapes, path, names):
  """The `Architecture` of the checkpoint's number of generator blocks."""
  block_pattern = re.compile(names["g_block_regex"])
  block_numbers = sorted({int(m.group(1)) for n in shapes for m in [block_pattern.match(n)] if m})
  if not block_numbers:
    raise OfficialCheckpointError(f"checkpoint {path} has no generator blocks "
                                  f"({names['g_block_regex']}): not a SAGAN checkpoint")
  image_size = 4 * 2 ** len(block_numbers)
  if image_size not in ARCHITECTURES:
    raise OfficialCheckpointError(
        f"checkpoint {path}: {len(block_numbers)} generator blocks give {image_size} pixels, "
        f"which has no architecture (supported: {sorted(ARCHITECTURES)})")
  return image_size, get_architecture(image_size)


def _attention_resolutions(shapes, path, names, architecture, image_size, g_width, d_width):
  """(G, D) attention resolutions, 0 where the architecture's default."""
  g_channels = [m * g_width for m in architecture.g_channels[1:]]
  g_resolutions = [8 * 2 ** i for i in range(len(g_channels))]
  g_attention = _attention_resolution(
      _shape(shapes, names["g_theta"], path)[2], g_channels, g_resolutions,
      architecture.attention_resolution, names["g_theta"])
  d_channels = [m * d_width for m in architecture.d_channels]
  d_resolutions, resolution = [], image_size
  for down in architecture.d_downsample:
    resolution = resolution // 2 if down else resolution
    d_resolutions.append(resolution)
  d_attention = _attention_resolution(
      _shape(shapes, names["d_theta"], path)[2], d_channels, d_resolutions,
      architecture.attention_resolution, names["d_theta"])
  default = architecture.attention_resolution
  return (0 if g_attention == default else int(g_attention),
          0 if d_attention == default else int(d_attention))


def infer_sizes(shapes, path, names):
  """image_size, num_classes, widths, z_dim and attention positions from variable shapes.

  `names` gives the naming scheme: a dict of callables / strings for the
  generator's dense kernel, block scope, last conv kernel, first D conv
  kernel, attention theta kernels, CBN gamma and the embedding.
  """
  image_size, architecture = _architecture(shapes, path, names)
  z_dim, h0_units = _shape(shapes, names["g_dense"], path)
  last = _shape(shapes, names["g_last"], path)
  g_width = last[2] // architecture.g_channels[-1]
  if h0_units != 16 * g_width * architecture.g_channels[0]:
    raise OfficialCheckpointError(
        f"checkpoint {path}: {names['g_dense']} has {h0_units} outputs, expected "
        f"{16 * g_width * architecture.g_channels[0]} for generator width {g_width}")
  d_first = _shape(shapes, names["d_first"], path)
  d_width = d_first[3] // architecture.d_channels[0]
  gamma = _shape(shapes, names["cbn_gamma"], path)
  num_classes = gamma[0] if len(gamma) > 1 and names["conditional"](gamma) else 0
  if num_classes and names["embedding"] in shapes and shapes[names["embedding"]][0] != num_classes:
    raise OfficialCheckpointError(
        f"checkpoint {path}: {names['embedding']} has {shapes[names['embedding']][0]} rows but "
        f"the generator's batch norms have {num_classes} classes")
  g_attention, d_attention = _attention_resolutions(shapes, path, names, architecture,
                                                    image_size, g_width, d_width)
  return dict(image_size=image_size, num_classes=int(num_classes), g_width=int(g_width),
              d_width=int(d_width), z_dim=int(z_dim), g_attention_resolution=g_attention,
              d_attention_resolution=d_attention)


def official_model_config(checkpoint_path, sn_gradient="official"):
  """The `ModelConfig` of an official checkpoint: its sizes, the official semantics.

  Sizes come from shapes: z_dim and the generator width from
  `g_snh0/Matrix` and `g_snconv_last/w`, the image size from the number of
  `g_block`s (4 * 2^n), the discriminator width from its first conv, the
  classes from the CBN tables (checked against `d_embedding`). Semantics are
  the `official()` preset's: eps 1e-5, decays 0.999 / 0.9999, Bessel-corrected
  g_bn moving variance, `sn_gradient="official"`.

  Raises:
    OfficialCheckpointError: unreadable checkpoint or missing key variables.
  """
  path, _, shapes = open_checkpoint(checkpoint_path)
  sizes = infer_sizes(shapes, path, OFFICIAL_NAMES)
  return dataclasses.replace(presets.official().model, sn_gradient=sn_gradient, **sizes)
