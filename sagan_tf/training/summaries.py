"""What a run reports as it goes: the progress line, TensorBoard scalars, sample grids."""

import os
import time

import tensorflow as tf

from sagan_tf import samples
from sagan_tf import storage
from sagan_tf.training import run_dir


class Speed:
  """Steps per second since the last progress line (restarted after a rollback)."""

  def __init__(self, step):
    self.restart(step)

  def restart(self, step):
    self._step, self._time = step, time.perf_counter()

  def update(self, step):
    """Steps per second from the last update (or restart) to `step`, which becomes the new start."""
    now = time.perf_counter()
    steps_per_second = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return steps_per_second


def format_eta(seconds):
  """H:MM:SS."""
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


def progress_line(step, total, steps_per_second, batch_size, metrics):
  """The line logged after each chunk: progress, speed, ETA and the chunk's losses."""
  images_per_second = steps_per_second * batch_size
  return (f"step {step}/{total} ({100.0 * step / total:.1f}%)  "
          f"{steps_per_second:.2f} steps/s  {images_per_second:.1f} images/s  "
          f"ETA {format_eta((total - step) / max(steps_per_second, 1e-9))}  "
          f"d_loss {metrics['d_loss']:.3f}  g_loss {metrics['g_loss']:.3f}  "
          f"D(real) {metrics['d_real']:.3f}  D(fake) {metrics['d_fake']:.3f}")


class SampleGrid:
  """The fixed-z sample grid of a run: one row per class (its name at the left), every sample_every.

  Args:
    generator: the generator to sample (the weight average when kept).
    num_classes: 0 for an unconditional model.
    z_dim: the noise length.
    class_names: names of the rows' classes (label numbers where missing).
    seed: seed of the fixed z.
  """

  def __init__(self, generator, num_classes, z_dim, class_names=None, seed=0):
    self.inputs = samples.class_grid_inputs(num_classes, z_dim, seed=seed)
    z, labels, columns = self.inputs
    self._z = tf.constant(z)
    self._labels = tf.constant(labels) if num_classes else None
    self._names = samples.row_names(labels[::columns], class_names) if num_classes else None
    self._sample = tf.function(lambda z, labels: generator(z, labels, training=False),
                               autograph=False)

  def write(self, step, write_dir, advice):
    """Writes write_dir/samples/step_<step>.png and the TensorBoard image; returns the path.

    Raises:
      storage.WriteError: the grid could not be written; ends in `advice`.
    """
    grid = samples.labelled_grid(self._sample(self._z, self._labels).numpy(), self.inputs[2],
                                 self._names)
    path = os.path.join(write_dir, run_dir.SAMPLE_DIR, f"step_{step:08d}.png")
    with storage.writing(f"sample grid {os.path.basename(path)}", os.path.dirname(path),
                         lambda: storage.remove_quietly(path + ".tmp"), advice):
      samples.write_png(path, grid)
      tf.summary.image("samples", grid[None], step=step)
      tf.summary.flush()
    return path


def write_scalars(write_dir, step, metrics, images_per_second, models, advice):
  """Losses, speed, spectral-norm sigmas and attention gammas to the default summary writer.

  Flushed at once, so that a full disk shows up now, as one line
  (storage.WriteError ending in `advice`), rather than at some later write
  or when the writer closes.

  Args:
    write_dir: the directory the run writes (its summaries are in train/).
    step: the step to record them at.
    metrics: the chunk's metrics; "finite" and "steps" are not losses.
    images_per_second: the training speed.
    models: the Keras models whose sigma and attention gamma variables to record.
    advice: the end of the message of a failed write.
  """
  with storage.writing("summaries", os.path.join(write_dir, run_dir.SUMMARY_DIR), advice=advice):
    _write_scalar_values(step, metrics, images_per_second, models)
    tf.summary.flush()


def _write_scalar_values(step, metrics, images_per_second, models):
  for name, value in metrics.items():
    if name not in ("finite", "steps"):
      tf.summary.scalar(f"losses/{name}", value, step=step)
  tf.summary.scalar("speed/images_per_second", images_per_second, step=step)
  for model in models:
    for variable in model.variables:
      path = variable.path
      if path.endswith("/sigma"):
        tf.summary.scalar(f"sigma/{path[:-len('/sigma')]}", variable, step=step)
      elif "non_local" in path and path.endswith("/gamma"):
        tf.summary.scalar(f"attention_gamma/{path}", variable, step=step)
