"""The TorchScript Inception port's weights put into the Keras network of inception.py.

Checks every convolution's shape, stride and padding against the port, and folds
each inference batch norm into its convolution when the network was built that way.
"""

import keras
import numpy as np

from sagan_tf.metrics import torchscript_weights

# Epsilon of the network's batch norms.
BN_EPSILON = 1e-3


def fold_batch_norm(kernel, beta, mean, variance, epsilon=BN_EPSILON):
  """(kernel, bias) in float32 of a bias-free conv with a scale-free inference batch norm folded in.

  `relu(bn(conv(x, kernel)))` equals `relu(conv(x, kernel * s) + beta - mean * s)` with
  `s = 1 / sqrt(variance + epsilon)` per output channel (the last axis of the
  `(rows, cols, in, out)` kernel); computed in float64.
  """
  scale = 1.0 / np.sqrt(np.asarray(variance, np.float64) + epsilon)
  folded = np.asarray(kernel, np.float64) * scale
  bias = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
  return folded.astype(np.float32), bias.astype(np.float32)


def _torch_padding(conv):
  """Returns the symmetric (rows, cols) zero padding the port uses for a Keras conv."""
  if conv.padding == "valid":
    return (0, 0)
  if conv.strides != (1, 1):
    raise ValueError(f"{conv.name}: 'same' padding with strides {conv.strides} has no "
                     "symmetric equivalent")
  return tuple((k - 1) // 2 for k in conv.kernel_size)


def assign_torchscript_weights(model, root, path):
  """Copies the TorchScript port's weights into `build_inception_network()`.

  Args:
    model: Model returned by `build_inception_network`; convolutions with a bias get
      their batch norm folded in.
    root: Module tree of `inception-2015-12-05.pt` from `load_torchscript`.
    path: The file's path, for error messages.

  Raises:
    ValueError: If the port's layers, shapes, strides or paddings do not match the
      network; the message names the file.
  """
  modules = torchscript_weights.flatten_modules(root)
  roots = [p for p, m in modules.items() if "mixed_10" in m.attributes and "conv" in m.attributes]
  if len(roots) != 1:
    raise ValueError(f"{path}: no unique module holding `conv` ... `mixed_10`; this is not "
                     "the 2015-12-05 Inception port")
  prefix = f"{roots[0]}." if roots[0] else ""
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  expected = {f"{prefix}{conv.name}" for conv in convs}
  found = {p for p, m in modules.items() if "weight" in m.attributes and p.startswith(prefix)}
  if expected != found:
    raise ValueError(f"{path}: convolution layers differ from the network; missing "
                     f"{sorted(expected - found)[:5]}, unexpected {sorted(found - expected)[:5]}")
  for conv in convs:
    state = modules[f"{prefix}{conv.name}"].attributes
    weight = state["weight"]
    stride = state.get("stride")
    padding = state.get("padding")
    padding = tuple(padding) if isinstance(padding, (list, tuple)) else (padding, padding)
    if stride != conv.strides[0] or padding != _torch_padding(conv):
      raise ValueError(f"{path}: {conv.name} has stride {stride} and padding {padding}; the "
                       f"network expects {conv.strides[0]} and {_torch_padding(conv)}")
    # PyTorch stores (out, in, rows, cols); Keras wants (rows, cols, in, out).
    kernel = np.transpose(weight, (2, 3, 1, 0))
    if kernel.shape != tuple(conv.kernel.shape):
      raise ValueError(f"{path}: {conv.name} weight has shape {weight.shape}, expected "
                       f"{tuple(conv.kernel.shape)} in (rows, cols, in, out) order")
    for key in ("beta", "mean", "var"):
      if state[key].shape != (kernel.shape[-1],):
        raise ValueError(f"{path}: {conv.name}.{key} has shape {state[key].shape}, expected "
                         f"{(kernel.shape[-1],)}")
    if conv.use_bias:
      kernel, bias = fold_batch_norm(kernel, state["beta"], state["mean"], state["var"])
      conv.bias.assign(bias)
    else:
      batchnorm = model.get_layer(f"{conv.name}.batchnorm")
      for variable, key in ((batchnorm.beta, "beta"), (batchnorm.moving_mean, "mean"),
                            (batchnorm.moving_variance, "var")):
        variable.assign(state[key])
    conv.kernel.assign(kernel)
