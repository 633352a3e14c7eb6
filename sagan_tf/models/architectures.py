"""Architectures as data: per resolution, channel multipliers and where attention sits."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Channel multipliers (of the base width) for one image size.

  Attributes:
    g_channels: G feature multipliers from the 4x4 input of the first block
      to the output of the last; block i maps g_channels[i] -> g_channels[i+1]
      and doubles the resolution.
    d_channels: D output multipliers of each block, the first being the
      optimised block.
    d_downsample: whether each D block halves the resolution.
    attention_resolution: feature-map size after which both G and D attend.
  """
  g_channels: tuple
  d_channels: tuple
  d_downsample: tuple
  attention_resolution: int

  def __post_init__(self):
    if len(self.d_channels) != len(self.d_downsample):
      raise ValueError("d_channels and d_downsample differ in length")


# 128 is the official `generator_test` / `discriminator_test` (official-sagan.md
# sections 1-2); 32 and 64 follow the SNGAN/BigGAN ResNets the peers use.
ARCHITECTURES = {
    32: Architecture(g_channels=(4, 4, 4, 4), d_channels=(4, 4, 4, 4),
                     d_downsample=(True, True, False, False), attention_resolution=16),
    64: Architecture(g_channels=(16, 8, 4, 2, 1), d_channels=(1, 2, 4, 8, 16),
                     d_downsample=(True, True, True, True, False), attention_resolution=32),
    128: Architecture(g_channels=(16, 16, 8, 4, 2, 1), d_channels=(1, 2, 4, 8, 16, 16),
                      d_downsample=(True, True, True, True, True, False), attention_resolution=32),
    256: Architecture(g_channels=(16, 16, 8, 8, 4, 2, 1), d_channels=(1, 2, 4, 8, 8, 16, 16),
                      d_downsample=(True, True, True, True, True, True, False),
                      attention_resolution=64),
}


def get_architecture(image_size):
  """The `Architecture` of an image size.

  Raises:
    ValueError: for a size without an architecture.
  """
  if image_size not in ARCHITECTURES:
    raise ValueError(f"image_size must be one of {sorted(ARCHITECTURES)}, received {image_size}")
  return ARCHITECTURES[image_size]
