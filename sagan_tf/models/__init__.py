"""SAGAN generator and projection discriminator, and builders."""

from sagan_tf.models.architectures import ARCHITECTURES, Architecture, get_architecture
from sagan_tf.models.build import build_from_config, build_models, build_sagan, count_parameters
from sagan_tf.models.discriminator import Discriminator
from sagan_tf.models.generator import Generator
