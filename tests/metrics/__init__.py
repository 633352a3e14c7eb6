"""Tests for sagan_tf.metrics."""
