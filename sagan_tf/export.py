"""Exports a generator as a SavedModel that plain TensorFlow can load and serve, and loads it back."""

import json
import math
import os
import shutil

import tensorflow as tf

METADATA_FILE = "sagan_metadata.json"
EXTRA_ASSETS_DIR = "assets.extra"
FORMAT_VERSION = 1


class ExportError(ValueError):
  """A SavedModel directory that is missing, corrupt or not a sagan_tf export."""


def _truncated_normal(shape, seed, truncation):
  """Standard normal noise, or a normal truncated to [-t, t] when `truncation` is t > 0.

  Uses the inverse CDF of a uniform draw between Phi(-t) and Phi(t): the same
  distribution as resampling every value beyond |t|, without a data-dependent
  loop in the graph.
  """
  if not truncation:
    return tf.random.stateless_normal(shape, seed)
  bound = 0.5 * (1.0 + math.erf(-float(truncation) / math.sqrt(2.0)))
  uniform = tf.random.stateless_uniform(shape, seed, minval=bound, maxval=1.0 - bound)
  return tf.clip_by_value(tf.math.ndtri(uniform), -float(truncation), float(truncation))


def _to_uint8(images):
  return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def build_metadata(generator, *, step=0, class_names=None, truncation=None, ema=False,
                   dataset=None):
  """The metadata dict an export carries; see `export_generator`."""
  import sagan_tf  # pylint: disable=g-import-not-at-top
  num_classes = int(generator.num_classes)
  if class_names is not None:
    class_names = [str(name) for name in class_names]
    if num_classes and len(class_names) != num_classes:
      raise ValueError(f"class_names has {len(class_names)} names but the generator has "
                       f"{num_classes} classes")
  return {
      "format": "sagan_tf.generator",
      "format_version": FORMAT_VERSION,
      "sagan_tf_version": sagan_tf.__version__,
      "z_dim": int(generator.z_dim),
      "num_classes": num_classes,
      "class_names": class_names,
      "image_size": int(generator.image_size),
      "attention_resolution": int(getattr(generator, "attention_resolution", 0) or 0),
      "step": int(step),
      "ema": bool(ema),
      "truncation": float(truncation) if truncation else None,
      "dataset": dataset,
      "output_range": [-1.0, 1.0],
  }


def _tf_variable(variable):
  """The tf.Variable behind a Keras 3 variable (itself if it is one)."""
  if isinstance(variable, tf.Variable):
    return variable
  value = variable.value  # Outside an autocast scope: the tf.Variable itself.
  if not isinstance(value, tf.Variable):
    raise TypeError(f"cannot export variable {variable.path}: its value is a {type(value).__name__}, "
                    "not a tf.Variable (is the Keras backend TensorFlow?)")
  return value


class _GeneratorModule(tf.Module):
  """The exported object: the generator's variables, the serving functions and the metadata."""

  def __init__(self, generator, metadata):
    super().__init__(name="sagan_generator")
    z_dim = metadata["z_dim"]
    num_classes = metadata["num_classes"]
    truncation = metadata["truncation"]
    # Only the variables and traced graphs are saved, never the Keras objects,
    # so loading needs no sagan_tf or Keras code. The tf.Variables under the
    # Keras wrappers are tracked because the graphs capture those: tracking
    # the wrappers exports a second copy that TF1 loaders (saved_model_cli,
    # TF Serving) restore instead, leaving the captured ones uninitialised.
    self.generator_variables = [_tf_variable(v) for v in generator.variables]
    self.metadata_json = tf.Variable(json.dumps(metadata, sort_keys=True), trainable=False,
                                     name="metadata_json")

    images_and_attention = _traced_generator(generator, z_dim, num_classes)
    endpoints = _image_endpoints(images_and_attention, z_dim)
    endpoints["sample"] = _sample_endpoint(images_and_attention, z_dim, num_classes, truncation)

    @tf.function(autograph=False, input_signature=[])
    def get_metadata():
      return {"metadata": self.metadata_json.read_value()}

    # A plain callable too, for Python clients whose labels are int32.
    @tf.function(autograph=False)
    def generate(z, labels):
      return images_and_attention(tf.cast(z, tf.float32), tf.cast(labels, tf.int64))[0]

    self.images_and_attention = images_and_attention
    self.serving_default = endpoints["serving_default"]
    self.generate_uint8 = endpoints["generate_uint8"]
    self.attention = endpoints["attention"]
    self.sample = endpoints["sample"]
    self.get_metadata = get_metadata
    self.generate = generate
    for dtype in (tf.int32, tf.int64):
      generate.get_concrete_function(_z_spec(z_dim), tf.TensorSpec([None], dtype, name="labels"))


def _z_spec(z_dim):
  return tf.TensorSpec([None, z_dim], tf.float32, name="z")


_LABELS_SPEC = tf.TensorSpec([None], tf.int64, name="labels")


def _checked_inputs(z, labels, z_dim, num_classes):
  """(z, int32 labels) after checks of z's width, the batch sizes and the label range."""
  labels = tf.cast(labels, tf.int64)
  # Loaded signatures do not check shapes against their TensorSpecs, so a
  # wrong width would otherwise fail deep inside as a matmul shape error.
  checks = [
      tf.debugging.assert_equal(tf.shape(z, out_type=tf.int64)[-1], tf.constant(z_dim, tf.int64),
                                message=f"z must have shape [batch, {z_dim}]"),
      tf.debugging.assert_equal(tf.shape(z, out_type=tf.int64)[0],
                                tf.shape(labels, out_type=tf.int64)[0],
                                message="z and labels must have the same batch size")]
  if num_classes:
    message = f"labels must be class indices in [0, {num_classes})"
    checks.append(tf.debugging.assert_non_negative(labels, message=message))
    checks.append(tf.debugging.assert_less(labels, tf.constant(num_classes, tf.int64),
                                           message=message))
  with tf.control_dependencies(checks):
    return tf.identity(z), tf.cast(labels, tf.int32)


def _traced_generator(generator, z_dim, num_classes):
  """The one tf.function every endpoint calls, so the generator is traced once."""
  @tf.function(autograph=False, input_signature=[_z_spec(z_dim), _LABELS_SPEC])
  def images_and_attention(z, labels):
    z, labels = _checked_inputs(z, labels, z_dim, num_classes)
    # training=False: no spectral-norm u, batch-norm statistic or other state changes.
    return generator(z, labels if num_classes else None, training=False, return_attention=True)
  return images_and_attention


def _image_endpoints(images_and_attention, z_dim):
  """serving_default, generate_uint8 and attention: (z, labels) -> images (and attention)."""
  signature = [_z_spec(z_dim), _LABELS_SPEC]

  @tf.function(autograph=False, input_signature=signature)
  def serving_default(z, labels):
    return {"images": images_and_attention(z, labels)[0]}

  @tf.function(autograph=False, input_signature=signature)
  def generate_uint8(z, labels):
    return {"images": _to_uint8(images_and_attention(z, labels)[0])}

  @tf.function(autograph=False, input_signature=signature)
  def attention(z, labels):
    images, attention_map = images_and_attention(z, labels)
    return {"images": images, "attention": attention_map}
  return {"serving_default": serving_default, "generate_uint8": generate_uint8,
          "attention": attention}


def _sample_endpoint(images_and_attention, z_dim, num_classes, truncation):
  """sample: (seed, batch_size) -> images with the z and labels drawn from the stateless seed."""
  @tf.function(autograph=False, input_signature=[tf.TensorSpec([], tf.int64, name="seed"),
                                                 tf.TensorSpec([], tf.int64, name="batch_size")])
  def sample(seed, batch_size):
    with tf.control_dependencies([tf.debugging.assert_positive(
        batch_size, message="batch_size must be positive")]):
      shape = tf.stack([batch_size, tf.constant(z_dim, tf.int64)])
    z = _truncated_normal(shape, tf.stack([seed, tf.constant(0, tf.int64)]), truncation)
    if num_classes:
      labels = tf.random.stateless_uniform(shape[:1], tf.stack([seed, tf.constant(1, tf.int64)]),
                                           minval=0, maxval=num_classes, dtype=tf.int64)
    else:
      labels = tf.zeros(shape[:1], tf.int64)
    return {"images": images_and_attention(z, labels)[0], "z": z, "labels": labels}
  return sample


def _float32(generator):
  """`generator`, or a float32 copy of a mixed-precision one: exports compute in float32.

  The variables of a mixed-precision generator are float32 already; a copy
  under the float32 policy serves the same weights at full precision and at
  float32 speed on hardware without bfloat16 or float16 units.
  """
  from sagan_tf.models.build import build_models  # pylint: disable=g-import-not-at-top
  if generator.dtype_policy.name == "float32":
    return generator
  copy = generator.__class__.from_config({**generator.get_config(), "dtype": "float32"})
  build_models(copy)
  copy.set_weights(generator.get_weights())
  return copy


def export_generator(generator, export_dir, *, step=0, class_names=None, truncation=None, ema=False,
                     dataset=None):
  """Writes `generator` as a SavedModel that needs only TensorFlow to load and serve.

  Signatures (all run the generator with training=False, so serving changes no
  variable; labels are int64 because that is what numpy and saved_model_cli
  give for `np.array([0, 1])`):
    serving_default: z float32 [batch, z_dim], labels int64 [batch] ->
      {"images": float32 [batch, H, W, 3] in [-1, 1]}.
    generate_uint8: same inputs -> {"images": uint8 [batch, H, W, 3]},
      round((x + 1) * 127.5) clipped to [0, 255].
    attention: same inputs -> {"images", "attention": float32
      [batch, r*r, r*r/4]} at the self-attention layer's resolution r.
    sample: seed int64 scalar, batch_size int64 scalar -> {"images", "z",
      "labels"}, z standard normal (truncated to [-t, t] when `truncation`)
      and labels uniform, both from the stateless seed.
    get_metadata: no inputs -> {"metadata": JSON string}.
  Labels outside [0, num_classes), or a batch size differing between z and
  labels, fail with an InvalidArgumentError that says so; a z of the wrong
  width is refused by the signature's [None, z_dim] shape. An unconditional
  generator (num_classes 0) takes labels like the others and ignores them.
  The loaded object also has `generate(z, labels)` for int32 or int64 labels,
  and `metadata_json`, a string variable.

  The metadata (see `build_metadata`) is also written to
  `assets.extra/sagan_metadata.json` for tools that do not run TensorFlow.

  The SavedModel computes in float32, also for a generator trained in mixed
  precision.

  Args:
    generator: a built `Generator`.
    export_dir: the SavedModel directory to write.
    step: the training step of the weights.
    class_names: names of the classes, or None.
    truncation: threshold t > 0 of the truncated noise of `sample`; None or 0
      samples plain normal noise.
    ema: whether the weights are the exponential moving average.
    dataset: name of the training data set, or None.

  Returns:
    The metadata dict.
  """
  if truncation is not None and truncation < 0:
    raise ValueError(f"truncation must be positive or None, got {truncation}")
  if not generator.built:
    raise ValueError("the generator has no variables yet: call it once (build_models) first")
  generator = _float32(generator)
  metadata = build_metadata(generator, step=step, class_names=class_names, truncation=truncation,
                            ema=ema, dataset=dataset)
  module = _GeneratorModule(generator, metadata)
  signatures = {name: getattr(module, name) for name in
                ("serving_default", "generate_uint8", "attention", "sample", "get_metadata")}
  tf.saved_model.save(module, export_dir, signatures=signatures)
  extra = os.path.join(export_dir, EXTRA_ASSETS_DIR)
  tf.io.gfile.makedirs(extra)
  with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), "w") as f:
    f.write(json.dumps(metadata, indent=2, sort_keys=True))
  return metadata


def export_to_run_dir(generator, model_dir, **metadata):
  """`export_generator` into model_dir/saved_model through a temporary folder, then renamed.

  A kill mid-export leaves the previous export (or none) and a
  saved_model.partial folder, never a half-written saved_model; a failed
  write (disk full) removes the partial folder and raises storage.WriteError.
  Remote directories are written in place.

  Args:
    generator: a built `Generator`.
    model_dir: the run directory.
    **metadata: step, class_names, ema, dataset as `export_generator` takes them.

  Returns:
    The path of the export.
  """
  from sagan_tf import storage  # pylint: disable=g-import-not-at-top
  from sagan_tf.training import run_dir  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, run_dir.SAVED_MODEL_DIR)
  local = "://" not in path
  target = path + ".partial" if local else path
  for leftover in (path + ".partial", path + ".old"):
    if local and os.path.exists(leftover):
      shutil.rmtree(leftover)
  previous = "the previous export is intact" if tf.io.gfile.exists(path) else "nothing was exported"
  with storage.writing("the exported generator", model_dir,
                       (lambda: storage.remove_quietly(target)) if local else None,
                       f"removed the partial export; {previous}; the checkpoints are intact; "
                       "free some space and run the same command to export"):
    export_generator(generator, target, **metadata)
  if local:
    if os.path.exists(path):
      os.rename(path, path + ".old")
    os.rename(target, path)
    if os.path.exists(path + ".old"):
      shutil.rmtree(path + ".old")
  return path


class ExportedGenerator:
  """A loaded export, callable like the generator in inference mode.

  Attributes:
    path: the SavedModel directory.
    metadata: the export's metadata dict.
    z_dim, num_classes, image_size, attention_resolution: from the metadata.
    module: the object `tf.saved_model.load` returned.

  Call arguments:
    z: float [batch, z_dim].
    labels: int [batch]; None for an unconditional generator (zeros are sent).
    return_attention: also return the attention map.

  Returns:
    float32 images [batch, H, W, 3] in [-1, 1] (a tf.Tensor); with
    `return_attention`, (images, attention).
  """

  def __init__(self, path, module, metadata):
    self.path = path
    self.module = module
    self.metadata = metadata
    self.z_dim = int(metadata["z_dim"])
    self.num_classes = int(metadata["num_classes"])
    self.image_size = int(metadata["image_size"])
    self.attention_resolution = int(metadata.get("attention_resolution") or 0)

  @property
  def has_attention(self):
    return "attention" in self.module.signatures

  def _inputs(self, z, labels):
    z = tf.convert_to_tensor(z, tf.float32)
    if labels is None:
      if self.num_classes:
        raise ValueError("the generator is conditional: pass integer `labels`")
      labels = tf.zeros(tf.shape(z)[:1], tf.int64)
    return z, tf.cast(tf.convert_to_tensor(labels), tf.int64)

  def __call__(self, z, labels=None, training=False, return_attention=False):
    del training  # An export only has the inference mode.
    z, labels = self._inputs(z, labels)
    if return_attention:
      if not self.has_attention:
        raise ValueError(f"{self.path} has no `attention` signature")
      outputs = self.module.signatures["attention"](z=z, labels=labels)
      return outputs["images"], outputs["attention"]
    return self.module.signatures["serving_default"](z=z, labels=labels)["images"]


def read_metadata(export_dir):
  """The metadata of an export from assets.extra, without loading the graph; {} when absent."""
  path = os.path.join(export_dir, EXTRA_ASSETS_DIR, METADATA_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def load_exported(export_dir):
  """Loads a directory written by `export_generator`.

  Args:
    export_dir: the SavedModel directory.

  Returns:
    (generator, metadata): an `ExportedGenerator` and the metadata dict.

  Raises:
    ExportError: the directory or its saved_model.pb is missing, the
      SavedModel cannot be read, or it is not a sagan_tf generator export.
  """
  if not tf.io.gfile.isdir(export_dir):
    raise ExportError(f"no SavedModel at {export_dir}: the directory does not exist")
  if not tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
    raise ExportError(f"no SavedModel at {export_dir}: saved_model.pb not found")
  try:
    module = tf.saved_model.load(export_dir)
  except Exception as error:  # pylint: disable=broad-except
    # Protobuf decode errors, OpErrors and ValueErrors all mean an unreadable export.
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise ExportError(f"cannot load the SavedModel at {export_dir} (corrupt or incomplete?): "
                      f"{type(error).__name__}: {first}") from None
  if hasattr(module, "metadata_json"):
    metadata = json.loads(module.metadata_json.numpy().decode("utf-8"))
  else:
    metadata = read_metadata(export_dir)
  if metadata.get("format") != "sagan_tf.generator" or "serving_default" not in module.signatures:
    raise ExportError(f"{export_dir} is a SavedModel but not a sagan_tf generator export")
  return ExportedGenerator(export_dir, module, metadata), metadata
