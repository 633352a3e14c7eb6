"""Tests of sagan_tf.layers."""
