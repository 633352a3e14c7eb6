"""Writes tests/data_files/inception_reference.npz: pool_3 features from the TorchScript port.

The reference is the TorchScript module `inception-2015-12-05.pt` itself, run by PyTorch
on a few fixed synthetic uint8 images. The images are resized to 299x299 here in numpy
with the TF1 legacy bilinear rule (what the original graph's ResizeBilinear does and
what `sagan_tf.metrics.inception.resize_and_normalize` calls), scaled to (x - 128) / 128
and fed as NCHW float32. Torch is never a dependency of the project: run this in a
throwaway venv.

Regenerate (from the repository root):
  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /work/venv/bin/python tools/fetch_inception.py        # or any Python 3: stdlib only
  /tmp/torchvenv/bin/python tools/make_inception_reference.py [--weights PATH] [--output PATH]

The output holds `images_64` (4, 64, 64, 3) and `images_32` (2, 32, 32, 3) uint8,
`pool_3_64` and `pool_3_32` float32 features, and the torch version and weight SHA-1 as
strings. Importing this module needs only numpy (tests import `resize_bilinear_legacy`).
"""

import argparse
import os
import sys

import numpy as np

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resize_bilinear_legacy(images, height, width):
  """Bilinear resize in TF1 legacy mode (align_corners=False, half_pixel_centers=False).

  Output pixel i samples input coordinate i * in_size / out_size (no half-pixel shift);
  the neighbours are floor and ceil of it, clamped to the last row/column. Arithmetic is
  float32 in the order of TF's ResizeBilinear kernel, so results match it to round-off.

  Args:
    images: Array of shape `(batch, in_height, in_width, channels)`.
    height: Output height.
    width: Output width.

  Returns:
    float32 array of shape `(batch, height, width, channels)`.
  """
  images = np.asarray(images, np.float32)

  def weights(in_size, out_size):
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    lower_f = np.floor(source)
    lower = np.maximum(lower_f.astype(np.int64), 0)
    upper = np.minimum(np.ceil(source).astype(np.int64), in_size - 1)
    return lower, upper, (source - lower_f).astype(np.float32)

  y0, y1, y_lerp = weights(images.shape[1], height)
  x0, x1, x_lerp = weights(images.shape[2], width)
  x_lerp = x_lerp[None, None, :, None]
  top = images[:, y0]
  bottom = images[:, y1]
  top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * x_lerp
  bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * x_lerp
  return top + (bottom - top) * y_lerp[None, :, None, None]


def make_reference_images(size, count, seed):
  """Returns `count` deterministic uint8 RGB images of `size` x `size`.

  Args:
    size: Side length in pixels.
    count: Number of images, at most 4: a colour ramp, oblique stripes, random colour
      blocks and uniform noise, in that order.
    seed: Seed for the numpy generator (blocks and noise).

  Returns:
    uint8 array of shape `(count, size, size, 3)`.
  """
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
  ramp = np.stack([xx, yy, (1.0 - xx) * yy], axis=-1) * 255.0
  phases = np.array([0.0, 2.0, 4.0])
  stripes = 127.5 + 127.5 * np.sin(2 * np.pi * (3 * xx + 2 * yy)[..., None] + phases)
  block = max(size // 8, 1)
  colours = rng.uniform(0, 255, size=(-(-size // block),) * 2 + (3,))
  blocks = np.repeat(np.repeat(colours, block, axis=0), block, axis=1)[:size, :size]
  noise = rng.uniform(0, 255, size=(size, size, 3))
  images = np.stack([ramp, stripes, blocks, noise])[:count]
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def main(argv=None):
  sys.path.insert(0, os.path.join(_REPO_ROOT, "tools"))
  import fetch_inception  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--weights", default=os.path.join(fetch_inception.default_cache_dir(),
                                                        fetch_inception.FILENAME))
  parser.add_argument("--output", default=os.path.join(_REPO_ROOT, "tests", "data_files",
                                                       "inception_reference.npz"))
  args = parser.parse_args(argv)
  sha1 = fetch_inception.file_sha1(args.weights)
  if sha1 != fetch_inception.SHA1:
    print(f"warning: {args.weights} has SHA-1 {sha1}, expected {fetch_inception.SHA1}",
          file=sys.stderr)
  module = torch.jit.load(args.weights, map_location="cpu").eval()
  arrays = {"torch_version": np.array(torch.__version__), "weights_sha1": np.array(sha1)}
  for size, count, seed in ((64, 4, 64), (32, 2, 32)):
    images = make_reference_images(size, count, seed)
    inputs = (resize_bilinear_legacy(images, 299, 299) - np.float32(128)) / np.float32(128)
    with torch.no_grad():
      features = module(torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))))
    arrays[f"images_{size}"] = images
    arrays[f"pool_3_{size}"] = features.numpy().astype(np.float32)
  np.savez_compressed(args.output, **arrays)
  print(args.output)
  return 0


if __name__ == "__main__":
  sys.exit(main())
