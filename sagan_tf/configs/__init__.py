"""Experiment configuration: frozen dataclasses and presets."""

from sagan_tf.configs.experiment import (DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig,
                                         RuntimeConfig, TrainConfig, apply_overrides,
                                         overrides_from_file)
from sagan_tf.configs.presets import PRESETS, preset_for_dataset
