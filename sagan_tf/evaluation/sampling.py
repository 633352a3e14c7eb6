"""The generator under evaluation: loading it, its noise and labels, and one sampling interface."""

import os

import numpy as np
import tensorflow as tf

from sagan_tf import export
from sagan_tf.evaluation.errors import EvaluationError
from sagan_tf.training import run_dir


def sample_noise(rng, num, z_dim, truncation=0.0):
  """float32 [num, z_dim] standard normal noise; values beyond |truncation| are resampled (t > 0).

  Resampling until every value lies in [-t, t] is the truncation trick of
  BigGAN (Brock et al., 2019, Sec. 3.1); 0 turns it off.
  """
  z = rng.standard_normal((num, z_dim))
  if truncation and truncation > 0:
    outside = np.abs(z) > truncation
    while outside.any():
      z[outside] = rng.standard_normal(int(outside.sum()))
      outside = np.abs(z) > truncation
  return z.astype(np.float32)


def balanced_labels(rng, num, num_classes):
  """int32 [num] labels with every class equally often (up to one), in random order; zeros if 0."""
  if not num_classes:
    return np.zeros((num,), np.int32)
  return rng.permutation(np.arange(num) % num_classes).astype(np.int32)


def metric_inputs(seed, num, z_dim, num_classes, truncation=0.0):
  """(z, labels) of the metric samples: `num` noise vectors, then balanced labels, from `seed`.

  evaluate.py and the evaluation during training both draw their samples
  here, so the same seed and count give the same images.
  """
  rng = np.random.default_rng(seed)
  z = sample_noise(rng, num, z_dim, truncation)
  return z, balanced_labels(rng, num, num_classes)


class Sampler:
  """One interface over a Keras `Generator` and an `export.ExportedGenerator`.

  Args:
    generator: a built Generator (run with training=False) or a loaded export.

  Attributes:
    z_dim, num_classes, image_size, attention_resolution: of the generator.
    has_attention: whether `generate_with_attention` works.
  """

  def __init__(self, generator):
    self.generator = generator
    self.z_dim = int(generator.z_dim)
    self.num_classes = int(generator.num_classes)
    self.image_size = int(generator.image_size)
    self.attention_resolution = int(getattr(generator, "attention_resolution", 0) or 0)
    self._exported = isinstance(generator, export.ExportedGenerator)
    self.has_attention = bool(generator.has_attention) if self._exported else True
    if not self._exported:
      specs = [tf.TensorSpec([None, self.z_dim], tf.float32), tf.TensorSpec([None], tf.int32)]
      conditional = self.num_classes > 0

      # One trace for every batch size; training=False changes no variable.
      @tf.function(input_signature=specs, autograph=False)
      def run(z, labels):
        return generator(z, labels if conditional else None, training=False, return_attention=True)

      self._run = run

  def _call(self, z, labels):
    z = np.asarray(z, np.float32)
    labels = np.asarray(labels, np.int32)
    if self._exported:
      return self.generator(z, labels, return_attention=True)
    return self._run(z, labels)

  def generate(self, z, labels):
    """float32 numpy images [batch, S, S, 3] in [-1, 1]."""
    if self._exported:
      return np.asarray(self.generator(np.asarray(z, np.float32), np.asarray(labels, np.int64)))
    return np.asarray(self._call(z, labels)[0])

  def generate_with_attention(self, z, labels):
    """(images, attention [batch, r*r, r*r/4]) as numpy arrays."""
    if not self.has_attention:
      raise EvaluationError("this SavedModel has no `attention` signature; use --checkpoint for "
                            "attention maps or pass --attention_pixels=''")
    images, attention = self._call(z, labels)
    return np.asarray(images), np.asarray(attention)


def _checkpoint_path(checkpoint, step):
  """The prefix of checkpoint `step` ("best": the best-FID one) in the run directory.

  The error lists the steps there.
  """
  if step == "best":
    path = run_dir.best_checkpoint(checkpoint)
    if path is None:
      raise EvaluationError(f"--checkpoint_step=best: no checkpoint in "
                            f"{os.path.join(checkpoint, run_dir.BEST_CHECKPOINT_DIR)} (the run "
                            "had no train.eval_every, or no evaluation finished)")
    return path
  directory = os.path.join(checkpoint, run_dir.CHECKPOINT_DIR)
  path = os.path.join(directory, f"ckpt-{step}")
  if not tf.io.gfile.exists(path + ".index"):
    found = [int(prefix.rsplit("-", 1)[1]) for prefix in run_dir.checkpoints_on_disk(directory)]
    raise EvaluationError(f"no checkpoint for --checkpoint_step={step} in {directory}; "
                          f"steps there: {found or 'none'}")
  return path


def _load_saved_model(saved_model):
  generator, metadata = export.load_exported(saved_model)
  parent = os.path.dirname(os.path.abspath(saved_model.rstrip("/")))
  info = {"step": int(metadata.get("step", 0)), "ema": bool(metadata.get("ema", False)),
          "dataset": metadata.get("dataset"), "data_dir": None,
          "class_names": metadata.get("class_names"), "model_dir": parent,
          "source": {"saved_model": os.path.abspath(saved_model)}}
  return Sampler(generator), info


def load_sampler(*, checkpoint=None, checkpoint_step=None, saved_model=None, use_ema=True):
  """Loads the generator to evaluate.

  Args:
    checkpoint: a run directory written by train.py.
    checkpoint_step: the step of a checkpoint in it, or "best" for the
      best-FID one (checkpoints/best/); None takes the newest.
    saved_model: a directory written by `export.export_generator` (instead).
    use_ema: with `checkpoint`, restore the weight average when the run kept one.

  Returns:
    (sampler, info): a `Sampler` and a dict with "step", "ema", "dataset",
    "data_dir", "class_names", "model_dir" (the directory evaluation
    results go next to) and "source".

  Raises:
    EvaluationError, run_dir.RunDirError, export.ExportError.
  """
  if saved_model:
    return _load_saved_model(saved_model)
  path = None if checkpoint_step is None else _checkpoint_path(checkpoint, checkpoint_step)
  generator, config, step = run_dir.load_generator(checkpoint, use_ema=use_ema, checkpoint_path=path)
  dataset_info = run_dir.read_dataset_info(checkpoint)
  info = {"step": step, "ema": bool(use_ema and config.train.ema_decay > 0),
          "dataset": config.data.dataset, "data_dir": config.data.data_dir,
          "class_names": dataset_info.get("class_names"), "model_dir": os.path.abspath(checkpoint),
          "source": {"checkpoint": path or run_dir.latest_checkpoint(checkpoint)}}
  return Sampler(generator), info
