"""Tests of sagan_tf.training and train.py."""
