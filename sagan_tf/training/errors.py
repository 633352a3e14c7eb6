"""The errors that end a training run, and the one-line explanation of running out of memory."""

import re


class TrainingError(RuntimeError):
  """Training cannot go on: divergence, a mismatched run directory, a bad batch split."""


class DivergenceError(TrainingError):
  """A NaN or Inf loss or weight; the checkpoints on disk predate it."""


class StepError(TrainingError):
  """A TensorFlow error inside a compiled chunk: unreadable input data, out of memory, ...

  Attributes:
    op_error: the tf.errors.OpError.
    step: the step the chunk started from; the checkpoints predate it.
  """

  def __init__(self, message, op_error, step):
    super().__init__(message)
    self.op_error = op_error
    self.step = step


def out_of_memory_message(error, config, step=None):
  """One line for a tf.errors.ResourceExhaustedError: what ran out, and which flag to change.

  Args:
    error: the ResourceExhaustedError (TensorFlow's "OOM when allocating
      tensor with shape[...] ... on <device> by allocator <name>").
    config: the ExperimentConfig of the run.
    step: the step the failing chunk started from, or None outside the loop.
  """
  text = str(error)
  shape = re.search(r"shape\[([^\]]*)\]", text)
  device = re.search(r" on (/\S+|\S+:\d+)", text)
  where = device.group(1).rstrip(",").split("device:")[-1] if device else "the device"
  tensor = f" (a tensor of shape [{shape.group(1)}])" if shape else ""
  when = f" after step {step}" if step is not None else " while building or tracing the model"
  train, model = config.train, config.model
  return (f"out of memory on {where}{when}{tensor}: the batch of "
          f"train.batch_size={train.batch_size} images at {model.image_size}x{model.image_size} with model widths g_width="
          f"{model.g_width}, d_width={model.d_width} does not fit; lower --batch_size (or "
          "model.g_width / model.d_width), or use more devices (--strategy=mirrored); the "
          "checkpoints are intact")
