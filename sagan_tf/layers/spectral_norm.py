"""Spectral normalisation as a reparameterisation: the layer computes W / sigma(W) in `call`."""

import keras
from keras import ops

GRADIENT_MODES = ("autodiff", "official", "stop")


def l2_normalize(x, epsilon=1e-12):
  """x / (||x|| + epsilon): the official code adds epsilon outside the root."""
  return x / (ops.sqrt(ops.sum(ops.square(x))) + epsilon)


@keras.saving.register_keras_serializable(package="sagan_tf")
class SpectralNormalization(keras.layers.Layer):
  """Divides the kernel of a Dense, Conv2D or Embedding layer by its spectral norm.

  The raw kernel stays the trainable variable; every call computes
  W_bar = W / sigma(W) (Miyato et al. 2018, Eq. 8) and applies the wrapped
  layer's operation with W_bar. sigma is estimated by power iteration with a
  persistent vector `u` of shape [1, C_out], as the official SAGAN code
  (`ops.spectral_normed_weight`): with W viewed as a [K, C_out] matrix,

      v = l2n(u W^T),  u' = l2n(v W),  sigma = v W u'^T,

  where l2n(x) = x / (||x|| + eps). Convolution kernels [kh, kw, C_in, C_out]
  are reshaped row-major to [kh*kw*C_in, C_out]; an embedding table
  [num_classes, dim] is normalised as its transpose, so C_out = num_classes.

  With `training=True` the iterated u' is written into `u`. u' depends only
  on the mirrored W and u, so every replica computes the same value and u
  and sigma are replica-local (aggregation NONE): the write needs no
  merge_call or collective, also inside XLA (docs/distributed.md). With
  `training=False` nothing
  is written, but the output still uses the once-iterated u', so inference
  outputs equal the official graph's.

  Gradient modes:
    "autodiff": gradients flow through u', v and sigma (the official forward,
      differentiated exactly).
    "official": as "autodiff", except where the official TF1 graph differs
      from plain autodiff: there `u` is a ref variable whose in-place write
      happens before the backward pass, so the gradient of the first product
      u W^T uses u' in place of u. Applied only when u is written (training).
    "stop": u and v are constants for the gradient (BigGAN, TF-GAN); sigma
      is still differentiable through W.

  Args:
    layer: a `keras.layers.Dense`, `Conv2D` or `Embedding`, unbuilt or built.
    power_iterations: power iterations per call (1 as the paper).
    gradient: one of "autodiff", "official", "stop".
    epsilon: added to the norm in l2n.
    relaxed: divide by max(1, sigma) instead of sigma (TF-GAN's example since
      2019-08); False is the paper's equality constraint.

  Call arguments:
    inputs: the wrapped layer's input.
    training: whether to write the iterated `u` and `sigma`.

  Returns:
    The wrapped layer's output computed with the normalised kernel.

  Reference:
    Miyato et al., "Spectral Normalization for GANs", ICLR 2018, Eq. 8 and
    Algorithm 1; Zhang et al., SAGAN, ICML 2019, Sec. 4.
  """

  def __init__(self, layer, power_iterations=1, gradient="autodiff", epsilon=1e-12, relaxed=False,
               **kwargs):
    kwargs.setdefault("name", getattr(layer, "name", None))
    # u, sigma and the power iteration stay float32 under mixed precision.
    super().__init__(autocast=False, **kwargs)
    if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Embedding)):
      raise ValueError(
          f"SpectralNormalization wraps Dense, Conv2D or Embedding layers, received layer={layer!r}")
    if int(power_iterations) < 1:
      raise ValueError(f"`power_iterations` must be >= 1, received power_iterations={power_iterations}")
    if gradient not in GRADIENT_MODES:
      raise ValueError(f"`gradient` must be one of {GRADIENT_MODES}, received gradient={gradient!r}")
    if epsilon < 0:
      raise ValueError(f"`epsilon` must be >= 0, received epsilon={epsilon}")
    self.layer = layer
    self.power_iterations = int(power_iterations)
    self.gradient = gradient
    self.epsilon = float(epsilon)
    self.relaxed = bool(relaxed)
    self._is_embedding = isinstance(layer, keras.layers.Embedding)

  def build(self, input_shape):
    if not self.layer.built:
      self.layer.build(input_shape)
    kernel = self.kernel
    c_out = kernel.shape[0] if self._is_embedding else kernel.shape[-1]
    # autocast=False: the layer's autocast=False only clears an enclosing autocast
    # scope; a top-level mixed-precision call would otherwise read u in bfloat16.
    self.u = self.add_weight(
        name="u", shape=(1, c_out), dtype="float32",
        initializer=keras.initializers.TruncatedNormal(mean=0.0, stddev=1.0),
        trainable=False, autocast=False, aggregation="none")
    self.sigma = self.add_weight(
        name="sigma", shape=(), dtype="float32", initializer="ones", trainable=False,
        autocast=False, aggregation="none")

  @property
  def kernel(self):
    """The wrapped layer's raw (unnormalised) kernel variable."""
    return self.layer.embeddings if self._is_embedding else self.layer.kernel

  def _products(self, kernel):
    """x -> x W^T and x -> x W for row vectors x, with W the [K, C_out] view.

    Neither materialises a transpose of the kernel: a transposed copy of a
    3x3x1024x1024 kernel, and its gradient, cost more than the products.
    """
    def column_product(matrix, x):
      return ops.reshape(ops.matmul(matrix, ops.reshape(x, (-1, 1))), (1, -1))
    if self._is_embedding:  # W = table^T.
      return (lambda x: ops.matmul(x, kernel)), (lambda x: column_product(kernel, x))
    matrix = ops.reshape(kernel, (-1, kernel.shape[-1]))
    return (lambda x: column_product(matrix, x)), (lambda x: ops.matmul(x, matrix))

  def _power_iteration(self, times_wt, times_w, u, first_product=None):
    """Returns (u', v, v W): the last product is sigma's too, so it is not redone."""
    stop = self.gradient == "stop"
    v = product = None
    for index in range(self.power_iterations):
      v = l2_normalize(first_product if index == 0 and first_product is not None else times_wt(u),
                       self.epsilon)
      if stop:
        v = ops.stop_gradient(v)
      product = times_w(v)
      u = l2_normalize(product, self.epsilon)
      if stop:
        u = ops.stop_gradient(u)
    return u, v, product

  def normalized_kernel(self, training=False):
    """Returns (W_bar, u', sigma) in float32; writes nothing."""
    kernel = ops.cast(self.kernel, "float32")
    times_wt, times_w = self._products(kernel)
    u_read = ops.convert_to_tensor(self.u)
    u, v, v_w = self._power_iteration(times_wt, times_w, u_read)
    if self.gradient == "official" and training:
      # TF1's u/read aliases the variable's buffer and u.assign(u') writes into
      # it before the backward pass runs, so the backward of the first product
      # u W^T sees u'. Same forward value, the official gradient (fixture
      # README, "Reads of u"). `correction` is exactly 0, so the forward is
      # bit-identical to "autodiff"; (a + b) - b would round, and batch-4
      # batch norms amplify that to ~0.3% in G's gradients.
      first = times_wt(u_read)
      aliased = times_wt(ops.stop_gradient(u))
      correction = aliased - ops.stop_gradient(aliased)
      u, v, v_w = self._power_iteration(times_wt, times_w, u_read,
                                        first_product=ops.stop_gradient(first) + correction)
    sigma = ops.sum(v_w * u)
    divisor = ops.maximum(sigma, 1.0) if self.relaxed else sigma
    return kernel / divisor, u, sigma

  def call(self, inputs, training=False):
    kernel, u, sigma = self.normalized_kernel(training=training)
    if training:
      self.u.assign(ops.stop_gradient(u))
      self.sigma.assign(ops.stop_gradient(sigma))
    layer = self.layer
    if self._is_embedding:
      return ops.take(ops.cast(kernel, layer.compute_dtype), ops.cast(inputs, "int32"), axis=0)
    kernel = ops.cast(kernel, self.compute_dtype)
    inputs = ops.cast(inputs, self.compute_dtype)
    if isinstance(layer, keras.layers.Conv2D):
      outputs = ops.conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                         data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    else:
      outputs = ops.matmul(inputs, kernel)
    if layer.use_bias:
      outputs = outputs + ops.cast(layer.bias, self.compute_dtype)
    if layer.activation is not None:
      outputs = layer.activation(outputs)
    return outputs

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update({
        "layer": keras.saving.serialize_keras_object(self.layer),
        "power_iterations": self.power_iterations,
        "gradient": self.gradient,
        "epsilon": self.epsilon,
        "relaxed": self.relaxed,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
    return cls(**config)
