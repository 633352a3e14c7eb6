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


def write_sample_grid(images, columns, step, write_dir, advice, row_names=None):
  """Writes [-1, 1] `images` as write_dir/samples/step_<step>.png and to TensorBoard.

  The grid is `samples.labelled_grid`: cells enlarged to at least 96 px,
  `row_names` (one per row, or None) at the left.

  Returns:
    The PNG's path.

  Raises:
    storage.WriteError: the grid could not be written; ends in `advice`.
  """
  grid = samples.labelled_grid(images, columns, row_names)
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
