"""Tests of sagan_tf.configs."""
