"""Keras layers of SAGAN: spectral norm, self-attention, conditional batch norm, ResNet blocks."""

from sagan_tf.layers.conditional_batch_norm import ConditionalBatchNormalization
from sagan_tf.layers.self_attention import SelfAttention
from sagan_tf.layers.spectral_norm import SpectralNormalization
from sagan_tf.layers.blocks import DiscriminatorBlock, GeneratorBlock, sn_conv, sn_dense
