"""Tests of the experiment dataclasses, strict overrides and presets."""

import dataclasses
import json
import math
import re

import pytest

from sagan_tf import configs
from sagan_tf.configs import (ExperimentConfig, ModelConfig, PRESETS, apply_overrides,
                              preset_for_dataset)


def test_overrides_parse_each_field_type():
  config = apply_overrides(ExperimentConfig(), [
      "model.image_size=64",
      "optimizer.g_learning_rate=2e-4",
      "optimizer.beta_2=0.9",
      "model.sync_batch_norm=true",
      "runtime.jit_compile=1",
      "data.random_flip=off",
      "data.dataset=cifar10",
      " train.batch_size =32",
  ])
  assert config.model.image_size == 64 and type(config.model.image_size) is int
  assert config.optimizer.g_learning_rate == 2e-4 and type(config.optimizer.g_learning_rate) is float
  assert config.optimizer.beta_2 == 0.9
  assert config.model.sync_batch_norm is True
  assert config.runtime.jit_compile is True
  assert config.data.random_flip is False
  assert config.data.dataset == "cifar10"
  assert config.train.batch_size == 32
  # Untouched fields keep their defaults; the input config is not mutated.
  assert config.model.num_classes == ModelConfig().num_classes
  assert ExperimentConfig().model.image_size == 128


def test_overrides_float_field_accepts_integer_text_and_none_for_optional():
  config = apply_overrides(ExperimentConfig(), ["optimizer.d_learning_rate=1", "data.data_dir=/tmp/tfds"])
  assert config.optimizer.d_learning_rate == 1.0 and type(config.optimizer.d_learning_rate) is float
  assert config.data.data_dir == "/tmp/tfds"
  assert apply_overrides(ExperimentConfig(), ["data.data_dir=none"]).data.data_dir is None


def test_later_overrides_win():
  config = apply_overrides(ExperimentConfig(), ["train.d_steps=2", "train.d_steps=5"])
  assert config.train.d_steps == 5


@pytest.mark.parametrize("override, named", [
    ("bogus.key=1", "bogus"),
    ("to_json.key=1", "to_json"),
    ("model.bogus=1", "bogus"),
    ("model.image_size=abc", "model.image_size"),
    ("model.image_size=1.5", "model.image_size"),
    ("optimizer.beta_1=fast", "optimizer.beta_1"),
    ("model.sync_batch_norm=maybe", "model.sync_batch_norm"),
    ("model.image_size=48", "image_size"),
    ("model.num_classes=-1", "num_classes"),
    ("model.sn_gradient=exact", "sn_gradient"),
    ("optimizer.beta_1=1.0", "beta_1"),
    ("train.loss=wgan", "loss"),
    ("train.batch_size=0", "batch_size"),
    ("runtime.strategy=gpu", "strategy"),
    ("model.image_size", "model.image_size"),
    ("image_size=64", "image_size"),
])
def test_bad_overrides_raise_value_error_naming_the_key(override, named):
  with pytest.raises(ValueError, match=named.replace(".", r"\.")):
    apply_overrides(ExperimentConfig(), [override])


def test_configs_are_frozen():
  config = ExperimentConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.model.image_size = 64  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_dict_and_json(name):
  config = PRESETS[name]()
  assert isinstance(config, ExperimentConfig)
  assert ExperimentConfig.from_dict(config.to_dict()) == config
  assert ExperimentConfig.from_dict(json.loads(config.to_json())) == config


def test_from_dict_rejects_unknown_keys_and_sections():
  values = ExperimentConfig().to_dict()
  values["model"]["depth"] = 3
  with pytest.raises(ValueError, match="depth"):
    ExperimentConfig.from_dict(values)
  values = ExperimentConfig().to_dict()
  values["schedule"] = {}
  with pytest.raises(ValueError, match="schedule"):
    ExperimentConfig.from_dict(values)


def test_from_dict_fills_missing_fields_with_defaults():
  config = ExperimentConfig.from_dict({"model": {"image_size": 32}})
  assert config.model.image_size == 32
  assert config.model.g_width == ModelConfig().g_width
  assert config.train == ExperimentConfig().train


def test_presets_hold_their_documented_settings():
  imagenet = PRESETS["imagenet2012"]()
  assert (imagenet.model.image_size, imagenet.model.num_classes) == (128, 1000)
  assert imagenet.train.batch_size == 256
  assert (imagenet.optimizer.g_learning_rate, imagenet.optimizer.d_learning_rate) == (1e-4, 4e-4)
  assert (imagenet.optimizer.beta_1, imagenet.optimizer.beta_2) == (0.0, 0.999)
  official = PRESETS["official"]()
  assert official.model.sn_gradient == "official" and official.model.g_bn_bessel
  assert official.train.g_first
  # Apart from those three, official is the ImageNet preset.
  assert dataclasses.replace(
      official, model=dataclasses.replace(official.model, sn_gradient="autodiff", g_bn_bessel=False),
      train=dataclasses.replace(official.train, g_first=False)) == imagenet
  assert PRESETS["celeb_a"]().model.num_classes == 0
  assert PRESETS["cifar10"]().model.image_size == 32


@pytest.mark.parametrize("dataset, preset", [
    ("imagenet2012", "imagenet2012"),
    ("cifar10", "cifar10"),
    ("celeb_a", "celeb_a"),
    ("animal_mnist", "animal_mnist"),
])
def test_preset_for_dataset_maps_known_names(dataset, preset):
  assert preset_for_dataset(dataset) == PRESETS[preset]()


def test_preset_for_unknown_dataset_is_generic_and_keeps_the_name():
  config = preset_for_dataset("folder:/data/flowers")
  assert config.data.dataset == "folder:/data/flowers"
  assert config.model.image_size == 64
  assert isinstance(config, ExperimentConfig)


# Every numeric field of every section, found from the dataclasses themselves.
SECTIONS = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
NUMERIC_FIELDS = [(section, field) for section, default in SECTIONS.items()
                  for field in dataclasses.fields(default)
                  if type(field.default) in (int, float)]


def test_every_numeric_field_declares_bounds_that_its_default_meets():
  assert len(NUMERIC_FIELDS) >= 25
  for section, field in NUMERIC_FIELDS:
    bounds = field.metadata.get("bounds")
    assert bounds is not None, f"{section}.{field.name} has no bounds"
    assert bounds.contains(field.default), f"{section}.{field.name}"
  for name, preset in configs.PRESETS.items():
    preset()  # Every preset's values are inside the bounds.


def _refused_values(field):
  """Values outside the field's bounds, and non-finite ones for floats."""
  bounds = field.metadata["bounds"]
  values = []
  if bounds.low > -math.inf:
    values.append(bounds.low if bounds.low_open else bounds.low - 1)
  if bounds.high < math.inf:
    values.append(bounds.high if bounds.high_open else bounds.high + 1)
  if isinstance(field.default, float):
    values += [math.inf, -math.inf, math.nan]
  return values


@pytest.mark.parametrize("section,field", NUMERIC_FIELDS,
                         ids=[f"{s}.{f.name}" for s, f in NUMERIC_FIELDS])
def test_out_of_range_and_non_finite_values_are_refused_naming_the_field(section, field):
  key = f"{section}.{field.name}"
  values = _refused_values(field)
  assert values, key
  base = configs.PRESETS["animal_mnist"]()
  for value in values:
    text = str(int(value)) if isinstance(field.default, int) else repr(float(value))
    # As train.py applies --override and --config_file values.
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} must be"):
      configs.apply_overrides(base, [f"{key}={text}"])
    # As read back from a run directory's config.json.
    values_dict = base.to_dict()
    values_dict[section][field.name] = value
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} must be"):
      ExperimentConfig.from_dict(values_dict)


@pytest.mark.parametrize("section,field", NUMERIC_FIELDS,
                         ids=[f"{s}.{f.name}" for s, f in NUMERIC_FIELDS])
def test_wrong_types_in_config_json_are_refused_naming_the_field(section, field):
  key = f"{section}.{field.name}"
  values = configs.PRESETS["animal_mnist"]().to_dict()
  for wrong in (str(field.default), True, None):
    values[section][field.name] = wrong
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} must be"):
      ExperimentConfig.from_dict(values)
