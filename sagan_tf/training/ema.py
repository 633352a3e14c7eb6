"""Exponential moving average of the generator's weights (Yazici et al. 2019; BigGAN)."""

import tensorflow as tf


class WeightAverage(tf.Module):
  """Keeps `average` (a generator of the same architecture) as an EMA of `source`.

  Trainable weights are averaged: a <- decay * a + (1 - decay) * w, after a
  plain copy until `start_step`; non-trainable state (batch-norm moving
  statistics, spectral-norm vectors) is copied, since averaging it has no
  meaning. `TrainStep` calls `update` in replica context, at the end of each
  iteration: build `average` inside `optimizers.replica_local_variables()`,
  so that each replica writes its own copy, from the same mirrored weights,
  with no communication.
  """

  def __init__(self, source, average, decay, start_step=0):
    super().__init__(name="weight_average")
    if not 0.0 < decay < 1.0:
      raise ValueError(f"decay must be in (0, 1), received decay={decay}")
    self.source = source
    self.average = average
    self.decay = float(decay)
    self.start_step = int(start_step)
    if len(source.trainable_variables) != len(average.trainable_variables):
      raise ValueError("the averaged generator does not match the trained one")

  def copy(self):
    """Sets every averaged variable to the source's value."""
    for target, value in zip(self.average.variables, self.source.variables):
      target.assign(value)

  def update(self, step):
    """One averaging step at global step `step` (a scalar tensor)."""
    decay = tf.where(step < self.start_step, 0.0, self.decay)
    for target, value in zip(self.average.trainable_variables, self.source.trainable_variables):
      target.assign(decay * target + (1.0 - decay) * value)
    for target, value in zip(self.average.non_trainable_variables,
                             self.source.non_trainable_variables):
      target.assign(value)
