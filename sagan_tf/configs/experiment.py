"""Frozen dataclasses that describe one experiment, and strict `key=value` overrides."""

import dataclasses
import json
import math
import typing

SN_GRADIENT_MODES = ("autodiff", "official", "stop")
LOSSES = ("hinge", "non_saturating")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# "auto": bfloat16 where the devices compute it natively, else float32 (training/precision.py).
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
SUPPORTED_IMAGE_SIZES = (32, 64, 128, 256)
INITS = ("official", "orthogonal")
CLASS_GAINS = ("official", "one_plus_embedding")
D_SN_UPDATES = ("d_update", "both")
DIFFAUGMENT_TRANSFORMS = ("color", "translation", "cutout")


def _require(condition, message):
  if not condition:
    raise ValueError(message)


def diffaugment_policy(text):
  """The transforms of a `train.diffaugment` string, in order: "" -> (), "color,cutout" -> 2.

  Raises:
    ValueError: one line naming an unknown transform and the allowed ones.
  """
  names = tuple(text.split(",")) if text else ()
  for name in names:
    _require(name in DIFFAUGMENT_TRANSFORMS,
             f"train.diffaugment must be empty or a comma list of {DIFFAUGMENT_TRANSFORMS}, "
             f"got {text!r} (unknown {name!r})")
  return names


@dataclasses.dataclass(frozen=True)
class Bounds:
  """The allowed range of a numeric config field, kept in the field's metadata."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False

  def contains(self, value):
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def describe(self, value):
    """What a refused `value` is told: 'positive', 'at most 4096', 'in [0, 1)', ..."""
    if self.high_open or (self.low > -math.inf and not self.low_open and self.high <= 2**32):
      return (f"in {'(' if self.low_open else '['}{_format(self.low)}, {_format(self.high)}"
              f"{')' if self.high_open else ']'}")
    if value > self.low if self.low_open else value >= self.low:
      return f"{'<' if self.high_open else 'at most'} {_format(self.high)}"
    if self.low == 0 and self.low_open:
      return "positive"
    return f"{'>' if self.low_open else '>='} {_format(self.low)}"


def _format(number):
  return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _number(default, low=-math.inf, high=math.inf, *, low_open=False, high_open=False):
  """A numeric field with its allowed range; every int and float field is declared this way."""
  return dataclasses.field(
      default=default, metadata={"bounds": Bounds(low, high, low_open, high_open)})


def _positive(default, high=math.inf):
  return _number(default, 0, high, low_open=True)


def _fraction(default):
  """A decay, momentum or beta: in [0, 1)."""
  return _number(default, 0.0, 1.0, high_open=True)


def check_fields(section, section_name):
  """Checks the type, finiteness and range of every field of a config section.

  Driven by the dataclass fields themselves: a field's default gives its
  type and `_number` metadata its range, so a new field is covered without
  a new check. Runs in `__post_init__`, i.e. before TensorFlow starts.

  Raises:
    ValueError: naming `section_name.field`, the value and what is allowed.
  """
  for field in dataclasses.fields(section):
    key, value = f"{section_name}.{field.name}", getattr(section, field.name)
    kind = type(field.default)
    if kind is bool:
      _require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
    elif kind in (int, float):
      is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
      if kind is int:
        _require(is_number and isinstance(value, int), f"{key} must be an integer, got {value!r}")
      else:
        _require(is_number, f"{key} must be a number, got {value!r}")
        _require(math.isfinite(value), f"{key} must be a finite number, got {value!r}")
      bounds = field.metadata.get("bounds")
      _require(bounds is not None, f"{key}: numeric config fields need bounds (use _number)")
      _require(bounds.contains(value), f"{key} must be {bounds.describe(value)}, got {value!r}")
    elif kind is str or field.default is None:
      _require(isinstance(value, str) or (field.default is None and value is None),
               f"{key} must be a string, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the generator and the discriminator.

  Attributes:
    image_size: output resolution in pixels; one of `SUPPORTED_IMAGE_SIZES`.
    num_classes: number of classes; 0 gives an unconditional model.
    g_width: generator base channel count (the paper's `gf_dim`, 64).
    d_width: discriminator base channel count (`df_dim`, 64).
    z_dim: length of the noise vector (128 in the paper).
    sn_gradient: how gradients treat the spectral-norm power iteration:
      "autodiff" (through u and v, plain autodiff of the official forward),
      "official" (as the official TF1 graph computes them, see
      `SpectralNormalization`), "stop" (u and v under stop_gradient, BigGAN).
    sn_power_iterations: power iterations per call (1 in the paper).
    sn_epsilon: added outside the square root in the l2 normalisation.
    bn_epsilon: batch-norm epsilon (official 1e-5).
    cbn_momentum: moving-average decay of the conditional batch norms.
    g_bn_momentum: moving-average decay of the generator's last batch norm.
    g_bn_bessel: the last batch norm's moving variance gets the unbiased
      batch variance, as the fused TF1 kernel of the official code does.
    sync_batch_norm: batch statistics over all replicas (TPU-style).
    g_attention_resolution: feature-map size after which G attends; 0 takes
      the preset's (32 at 128 pixels).
    d_attention_resolution: likewise for D.
    init: kernel initialisers. "official": Glorot-uniform kernels and
      class embedding, zero biases; "orthogonal": orthogonal conv, linear and
      embedding kernels, zero biases (BigGAN-PyTorch's `G_init="ortho"`).
    class_gain: how the conditional batch norms turn a label into a scale
      and offset. "official": gamma[y], beta[y] from tables that start at 1
      and 0, so all classes start equal; "one_plus_embedding": 1 + e[y] and
      b[y] from tables initialised as `init` says, so classes differ from
      step 0 (BigGAN-PyTorch's `ccbn` with embeddings).
    d_sn_update: in which updates D's spectral-norm vectors u are written.
      "d_update": in D's update only (the official graph); "both": also in
      G's, where D then runs with training=True (BigGAN-PyTorch, whose D
      stays in train mode).
    grayscale: G draws one grey channel, repeated as RGB, for grey data sets
      (the embedded one); official: three channels.
  """
  image_size: int = _number(128, 32, 256)
  num_classes: int = _number(1000, 0, 1_000_000)
  g_width: int = _positive(64, 4096)
  d_width: int = _positive(64, 4096)
  z_dim: int = _positive(128, 65536)
  sn_gradient: str = "autodiff"
  sn_power_iterations: int = _positive(1, 1000)
  sn_epsilon: float = _positive(1e-12, 1.0)
  bn_epsilon: float = _positive(1e-5, 1.0)
  cbn_momentum: float = _fraction(0.999)
  g_bn_momentum: float = _fraction(0.9999)
  g_bn_bessel: bool = False
  sync_batch_norm: bool = False
  g_attention_resolution: int = _number(0, 0, 256)
  d_attention_resolution: int = _number(0, 0, 256)
  init: str = "official"
  class_gain: str = "official"
  d_sn_update: str = "d_update"
  grayscale: bool = False

  def __post_init__(self):
    _require(self.image_size in SUPPORTED_IMAGE_SIZES,
             f"model.image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {self.image_size}")
    check_fields(self, "model")
    for name, allowed in (("sn_gradient", SN_GRADIENT_MODES), ("init", INITS),
                          ("class_gain", CLASS_GAINS), ("d_sn_update", D_SN_UPDATES)):
      value = getattr(self, name)
      _require(value in allowed, f"model.{name} must be one of {allowed}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the real images come from.

  Attributes:
    dataset: "animal_mnist" (embedded), a TFDS name such as "imagenet2012" or
      "cifar10", or "folder:/path/to/class_folders".
    data_dir: TFDS data directory (None: TFDS' default).
    split: split of the data set to train on.
    random_flip: random horizontal flips (the official code uses none).
    shuffle_buffer: examples in the shuffle buffer.
    skip_bad_images: skip (and count) the images of a folder data set that
      TensorFlow cannot read or decode, instead of refusing the folder.
  """
  dataset: str = "animal_mnist"
  data_dir: typing.Optional[str] = None
  split: str = "train"
  random_flip: bool = False
  shuffle_buffer: int = _positive(10000, 10**9)
  skip_bad_images: bool = False

  def __post_init__(self):
    check_fields(self, "data")
    _require(bool(self.dataset), "data.dataset must not be empty")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Adam with the two time-scale learning rates of the paper (Sec. 4)."""
  g_learning_rate: float = _positive(1e-4, 1.0)
  d_learning_rate: float = _positive(4e-4, 1.0)
  beta_1: float = _fraction(0.0)
  beta_2: float = _fraction(0.999)
  epsilon: float = _positive(1e-8, 1.0)

  def __post_init__(self):
    check_fields(self, "optimizer")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The training loop.

  Attributes:
    batch_size: global batch, split evenly over replicas.
    train_steps: generator updates in the whole run.
    d_steps: discriminator updates per generator update.
    g_first: run the generator update before the discriminator updates, as
      the official code does.
    loss: "hinge" (paper Eq. 3) or "non_saturating".
    ema_decay: decay of the generator weight average; 0 turns it off.
    ema_start_step: step from which the average is kept (copied before).
    steps_per_loop: training iterations per call of the compiled loop.
    checkpoint_every: steps between checkpoints.
    sample_every: steps between sample grids.
    summary_every: steps between TensorBoard summaries.
    keep_checkpoints: checkpoints kept on disk (the best-FID one in
      checkpoints/best/ is kept apart and never counted).
    diffaugment: DiffAugment policy (Zhao et al. 2020) applied to real and
      fake images before every D call: "" (off) or a comma list of "color",
      "translation", "cutout", applied in that order.
    eval_every: steps between evaluations of the generator (the weight
      average when kept) during training: FID, KID and, when the Inception
      weights have logits, IS; also at the last step. 0 turns it off.
    eval_samples: generated (and real) images per evaluation; the real
      statistics are computed once and cached, as evaluate.py caches them.
  """
  batch_size: int = _positive(256, 2**24)
  train_steps: int = _positive(1_000_000, 10**12)
  d_steps: int = _positive(1, 1000)
  g_first: bool = False
  loss: str = "hinge"
  ema_decay: float = _fraction(0.0)
  ema_start_step: int = _number(0, 0, 10**12)
  steps_per_loop: int = _positive(100, 10**7)
  checkpoint_every: int = _positive(1000, 10**12)
  sample_every: int = _positive(1000, 10**12)
  summary_every: int = _positive(100, 10**12)
  keep_checkpoints: int = _positive(3, 10**6)
  diffaugment: str = ""
  eval_every: int = _number(0, 0, 10**12)
  # At least the 10 splits of the Inception Score.
  eval_samples: int = _number(2000, 10, 10**7)

  def __post_init__(self):
    check_fields(self, "train")
    diffaugment_policy(self.diffaugment)
    _require(self.loss in LOSSES, f"train.loss must be one of {LOSSES}, got {self.loss!r}")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Devices, precision and determinism."""
  strategy: str = "auto"
  tpu: str = ""
  mixed_precision: str = "float32"
  jit_compile: bool = False
  # Keras and NumPy take seeds in [0, 2**32).
  seed: int = _number(0, 0, 2**32 - 1)
  deterministic: bool = False

  def __post_init__(self):
    check_fields(self, "runtime")
    _require(self.strategy in STRATEGIES,
             f"runtime.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    _require(self.mixed_precision in PRECISIONS,
             f"runtime.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything one training run needs; written to model_dir before step 0."""
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  train: TrainConfig = TrainConfig()
  runtime: RuntimeConfig = RuntimeConfig()

  def to_dict(self):
    return dataclasses.asdict(self)

  def to_json(self):
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values):
    """Rebuilds a config from `to_dict` output; unknown keys are errors."""
    sections = {}
    for field in dataclasses.fields(cls):
      section_values = dict(values.get(field.name, {}))
      section_cls = field.type if isinstance(field.type, type) else type(field.default)
      known = {f.name for f in dataclasses.fields(section_cls)}
      unknown = sorted(set(section_values) - known)
      if unknown:
        raise ValueError(f"unknown config keys in section {field.name!r}: {unknown}")
      sections[field.name] = section_cls(**section_values)
    unknown_sections = sorted(set(values) - set(sections))
    if unknown_sections:
      raise ValueError(f"unknown config sections: {unknown_sections}")
    return cls(**sections)


def _parse_value(text, current, key):
  """Parses `text` as the type of the field's current value (never `eval`)."""
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
      return True
    if lowered in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"override {key}={text!r}: expected a boolean (true/false)")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"override {key}={text!r}: expected an integer") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"override {key}={text!r}: expected a number") from None
  if current is None and text.lower() in ("none", ""):
    return None
  return text


def apply_overrides(config, overrides):
  """Returns `config` with `section.key=value` strings applied.

  Raises:
    ValueError: on a malformed string, an unknown section or key, a value of
      the wrong type, or a value the section's checks refuse.
  """
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"override {item!r} is not of the form section.key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if "." not in key:
      raise ValueError(f"override key {key!r} must name a section, e.g. model.{key}")
    section_name, field_name = key.split(".", 1)
    if not hasattr(config, section_name) or section_name.startswith("_") or not dataclasses.is_dataclass(
        getattr(config, section_name)):
      sections = [f.name for f in dataclasses.fields(config)]
      raise ValueError(f"override {key!r}: unknown section {section_name!r}; sections are {sections}")
    section = getattr(config, section_name)
    names = [f.name for f in dataclasses.fields(section)]
    if field_name not in names:
      raise ValueError(f"override {key!r}: unknown key {field_name!r}; {section_name} has {names}")
    value = _parse_value(text, getattr(section, field_name), key)
    config = dataclasses.replace(config, **{section_name: dataclasses.replace(section, **{field_name: value})})
  return config


def overrides_from_file(path):
  """The `section.key=value` overrides of a JSON file of a full or partial ExperimentConfig.

  Raises:
    ValueError: the file cannot be read or is not an object of sections.
  """
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ValueError(f"cannot read --config_file={path}: {error}") from None
  except RecursionError:
    raise ValueError(f"cannot read --config_file={path}: nested too deeply "
                     "(expected {\"section\": {\"key\": value}})") from None
  if not isinstance(values, dict):
    raise ValueError(f"--config_file={path}: expected a JSON object of "
                     f"sections, got {type(values).__name__}")
  overrides = []
  for section, fields in values.items():
    if not isinstance(fields, dict):
      raise ValueError(f"--config_file: section {section!r} must be an object")
    overrides += [f"{section}.{key}={'' if value is None else value}"
                  for key, value in fields.items()]
  return overrides
