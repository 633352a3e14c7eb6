"""What the metrics see of the generator: the Inception network and the generated features."""

import os

import numpy as np

from sagan_tf import cache
from sagan_tf import samples
from sagan_tf.evaluation.errors import EvaluationError
from sagan_tf.evaluation.progress import Progress


def _inception_error(error):
  message = " ".join(str(error).split())
  if "fetch_inception" not in message:
    message += "; pass --inception_path or run python tools/fetch_inception.py"
  return EvaluationError(message)


def find_inception_weights(path):
  """The weight file `load_feature_network` would read; EvaluationError naming the fixes if none."""
  # sagan_tf.metrics is imported where used: sampling and sheets need neither it nor scipy.
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  try:
    return metrics.find_inception_weights(path)
  except FileNotFoundError as error:
    raise _inception_error(error) from None


def load_feature_network(inception_path=None, batch_size=50):
  """(network, description): the FID Inception network and where its weights came from.

  Args:
    inception_path: weight file or folder; None: `metrics.load_inception`'s lookup.
    batch_size: images per forward pass.

  Raises:
    EvaluationError: no weights (the message names --inception_path and
      tools/fetch_inception.py) or an unreadable weight file.
  """
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  try:
    network = metrics.load_inception(inception_path, batch_size=batch_size)
  except FileNotFoundError as error:
    raise _inception_error(error) from None
  except ValueError as error:
    raise EvaluationError(" ".join(str(error).split())) from None
  return network, {"source": network.source, "path": os.path.abspath(network.path),
                   "sha1": cache.file_sha1(network.path)}


def generated_outputs(sampler, z, labels, *, batch_size, inception=None, classifier=None,
                      need_logits=False, progress=True):
  """Generates images batch by batch and keeps only what the metrics need.

  Returns:
    A dict with "pool_3" (and "logits" when `need_logits`) when `inception`
    is given, and "cls_predictions" (int32) when `classifier` is given.
  """
  results = {}
  meter = Progress("generating", len(z)) if progress else None
  for start in range(0, len(z), batch_size):
    images = sampler.generate(z[start:start + batch_size], labels[start:start + batch_size])
    # The metrics see the same 8-bit images a saved PNG holds.
    pixels = samples.to_uint8(images).astype(np.float32)
    if inception is not None:
      features = inception(pixels)
      results.setdefault("pool_3", []).append(features["pool_3"])
      if need_logits:
        results.setdefault("logits", []).append(features["logits"])
    if classifier is not None:
      logits = classifier(pixels / 127.5 - 1.0, training=False)
      results.setdefault("cls_predictions", []).append(np.argmax(np.asarray(logits), axis=-1))
    if meter:
      meter.update(len(images))
  return {key: np.concatenate(parts) for key, parts in results.items()}
