"""sagan_tf: a TensorFlow 2 / Keras 3 port of Self-Attention GAN (Zhang et al., ICML 2019)."""

__version__ = "0.1.0"
