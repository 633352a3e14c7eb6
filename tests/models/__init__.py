"""Tests of sagan_tf.models."""
