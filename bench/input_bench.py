"""The input benchmark: images/second that make_dataset delivers on the host, alone."""

import os
import statistics
import tempfile

from bench import common


def _write_png_folder(root, image_size, count):
  """`count` PNGs in two class folders, larger than `image_size` and not square, as photos are."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import PIL.Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  height, width = 2 * image_size, 3 * image_size // 2
  ramp = np.linspace(0, 255, width)[None, :, None]
  for index in range(count):
    folder = os.path.join(root, f"class_{index % 2}")
    os.makedirs(folder, exist_ok=True)
    noise = rng.integers(0, 64, (height, width, 3))
    image = np.clip(ramp * (index % 5 + 1) / 5 + noise, 0, 255).astype(np.uint8)
    PIL.Image.fromarray(image).save(os.path.join(folder, f"{index:05d}.png"))
  return height, width


def bench_input(spec):
  """Images/second that make_dataset delivers on the host, alone."""
  from sagan_tf.data import make_dataset  # pylint: disable=g-import-not-at-top
  size, batch = spec["preset"], spec["batch"]
  with tempfile.TemporaryDirectory() as root:
    detail = {}
    if spec["dataset"] == "folder":
      height, width = _write_png_folder(root, size, spec["files"])
      name = f"folder:{root}"
      detail = {"files": spec["files"], "file_size": f"{height}x{width}"}
    else:
      name = spec["dataset"]
    dataset = make_dataset(name, image_size=size, batch_size=batch, seed=0)
    iterator = iter(dataset)
    for _ in range(3):  # Fill the prefetch buffers and let AUTOTUNE settle.
      next(iterator)

    def run():
      for _ in range(spec["batches"]):
        images, _ = next(iterator)
      images.numpy()

    seconds = common.timed(run, spec["repeats"])
  median = statistics.median(seconds)
  common.emit({"name": "input", "preset": size, "dataset": spec["dataset"], "batch": batch,
                "dtype": "float32", "images_per_second": batch * spec["batches"] / median,
                "seconds": median, **detail})
