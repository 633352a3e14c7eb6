"""Evaluating a trained generator: sampling, Inception features, metrics, tables and PNG sheets."""

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
import typing

import keras
import numpy as np
import PIL.Image
import PIL.ImageDraw
import tensorflow as tf

import sagan_tf
from sagan_tf import data
from sagan_tf import export
from sagan_tf.training import run_dir

METRICS = ("fid", "is", "kid", "pr", "cls")
DEFAULT_METRICS = ("fid", "is", "kid", "pr")
INCEPTION_METRICS = ("fid", "is", "kid", "pr")
STANDIN_SOURCE = "standin"
SHEET_FILES = {"samples": "samples.png", "classes": "classes.png",
               "interpolation": "interpolation.png", "attention": "attention.png"}
METRICS_FILE = "metrics.json"


class EvaluationError(ValueError):
  """An evaluation that cannot run as asked; the message is one line naming the fix."""


def cache_root():
  """`$SAGAN_TF_CACHE`, else ~/.cache/sagan_tf (shared with the Inception weights)."""
  return os.environ.get("SAGAN_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "sagan_tf")


def _slug(text):
  return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[:60] or "x"


def _cache_key(*parts):
  """A readable file-name stem plus a hash of every part, so distinct settings never collide."""
  digest = hashlib.sha1(json.dumps([str(p) for p in parts]).encode("utf-8")).hexdigest()[:12]
  return "_".join(_slug(p) for p in parts[:4]) + "_" + digest


def file_sha1(path):
  """Hex SHA-1 of a file, read in chunks."""
  digest = hashlib.sha1()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


# Noise, labels and the generator.

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


def to_pixels(images):
  """uint8 images from [-1, 1] ones: round((x + 1) * 127.5) clipped, as a saved PNG holds them."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


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


def load_sampler(*, checkpoint=None, checkpoint_step=None, saved_model=None, use_ema=True):
  """Loads the generator to evaluate.

  Args:
    checkpoint: a run directory written by train.py.
    checkpoint_step: the step of a checkpoint in it; None takes the newest.
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
    generator, metadata = export.load_exported(saved_model)
    parent = os.path.dirname(os.path.abspath(saved_model.rstrip("/")))
    info = {"step": int(metadata.get("step", 0)), "ema": bool(metadata.get("ema", False)),
            "dataset": metadata.get("dataset"), "data_dir": None,
            "class_names": metadata.get("class_names"), "model_dir": parent,
            "source": {"saved_model": os.path.abspath(saved_model)}}
    return Sampler(generator), info
  path = None
  if checkpoint_step is not None:
    path = os.path.join(checkpoint, run_dir.CHECKPOINT_DIR, f"ckpt-{checkpoint_step}")
    if not tf.io.gfile.exists(path + ".index"):
      found = sorted(int(m.group(1)) for m in (
          re.search(r"ckpt-(\d+)\.index$", name) for name in
          tf.io.gfile.glob(os.path.join(checkpoint, run_dir.CHECKPOINT_DIR, "ckpt-*.index"))) if m)
      raise EvaluationError(f"no checkpoint for --checkpoint_step={checkpoint_step} in "
                            f"{os.path.join(checkpoint, run_dir.CHECKPOINT_DIR)}; steps there: "
                            f"{found or 'none'}")
  generator, config, step = run_dir.load_generator(checkpoint, use_ema=use_ema, checkpoint_path=path)
  dataset_info = run_dir.read_dataset_info(checkpoint)
  info = {"step": step, "ema": bool(use_ema and config.train.ema_decay > 0),
          "dataset": config.data.dataset, "data_dir": config.data.data_dir,
          "class_names": dataset_info.get("class_names"), "model_dir": os.path.abspath(checkpoint),
          "source": {"checkpoint": path or run_dir.latest_checkpoint(checkpoint)}}
  return Sampler(generator), info


# Progress on stderr.

class Progress:
  """A throttled "done/total, images/s, ETA" line on stderr.

  Args:
    label: what is being counted.
    total: the count at the end.
    stream: where to write; stderr by default.
    interval: seconds between lines (a terminal gets one rewritten line).
  """

  def __init__(self, label, total, stream=None, interval=2.0):
    self.label = label
    self.total = int(total)
    self.stream = stream or sys.stderr
    self.interval = interval
    self.done = 0
    self.start = time.monotonic()
    self._last = -math.inf
    self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

  def update(self, count):
    self.done += int(count)
    now = time.monotonic()
    if self.done < self.total and now - self._last < self.interval:
      return
    self._last = now
    elapsed = max(now - self.start, 1e-9)
    rate = self.done / elapsed
    eta = (self.total - self.done) / rate if rate > 0 else 0.0
    line = (f"{self.label}: {self.done}/{self.total} images, {rate:.1f} images/s, "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
    end = "\n" if self.done >= self.total or not self._tty else ""
    print(("\r" if self._tty else "") + line, end=end, file=self.stream, flush=True)


# Feature extractors.

class StandinInception:
  """TEST ONLY: a tiny random conv net with the interface of `metrics.InceptionNetwork`.

  It maps images to `dim` "pool_3" features (2048 has Inception's shapes)
  and 1008 "logits" so that the evaluation plumbing runs in seconds without
  the 2015-12-05 weights. Its numbers mean nothing and are never comparable
  to published FID or IS; results computed with it say so in metrics.json.
  Fewer features keep FID's matrix square root cheap in tests.

  Args:
    dim: number of pool features.
    seed: seed of the fixed random weights.
    batch_size: images per forward pass.
  """

  def __init__(self, dim=2048, seed=0, batch_size=50):
    rng = np.random.default_rng(seed)
    self.path = f"{STANDIN_SOURCE}:{dim}:{seed}"
    self.source = STANDIN_SOURCE
    self.has_logits = True
    self.batch_size = batch_size
    conv1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 16)), tf.float32)
    conv2 = tf.constant(rng.normal(0, 0.1, (3, 3, 16, 32)), tf.float32)
    dense = tf.constant(rng.normal(0, 0.2, (32, dim)), tf.float32)
    logits = tf.constant(rng.normal(0, 0.05 * math.sqrt(2048 / dim), (dim, 1008)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
                 autograph=False)
    def forward(images):
      x = tf.image.resize(images / 127.5 - 1.0, [32, 32])
      x = tf.nn.relu(tf.nn.conv2d(x, conv1, 2, "SAME"))
      x = tf.nn.relu(tf.nn.conv2d(x, conv2, 2, "SAME"))
      pool = tf.nn.relu(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), dense))
      return {"pool_3": pool, "logits": tf.matmul(pool, logits)}

    self.forward = forward

  def __call__(self, images):
    outputs = {}
    for start in range(0, len(images), self.batch_size):
      batch = tf.convert_to_tensor(np.asarray(images[start:start + self.batch_size]), tf.float32)
      for key, value in self.forward(batch).items():
        outputs.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


def _inception_error(error):
  message = " ".join(str(error).split())
  if "fetch_inception" not in message:
    message += "; pass --inception_path or run python tools/fetch_inception.py"
  return EvaluationError(message)


def _find_inception_weights(path):
  # sagan_tf.metrics is imported where used: sampling and sheets need neither it nor scipy.
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  try:
    return metrics.find_inception_weights(path)
  except FileNotFoundError as error:
    raise _inception_error(error) from None


def load_feature_network(inception_path=None, standin=0, batch_size=50):
  """(network, description): the FID Inception network, or the test-only stand-in.

  Args:
    inception_path: weight file or folder; None: `metrics.load_inception`'s lookup.
    standin: TEST ONLY: > 0 returns a `StandinInception` with that many features.
    batch_size: images per forward pass.

  Raises:
    EvaluationError: no weights (the message names --inception_path and
      tools/fetch_inception.py) or an unreadable weight file.
  """
  if standin:
    network = StandinInception(dim=int(standin), batch_size=batch_size)
    return network, {"source": STANDIN_SOURCE, "path": network.path, "sha1": network.path,
                     "note": "TEST ONLY random stand-in network: these numbers are not FID/IS"}
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  try:
    network = metrics.load_inception(inception_path, batch_size=batch_size)
  except FileNotFoundError as error:
    raise _inception_error(error) from None
  except ValueError as error:
    raise EvaluationError(" ".join(str(error).split())) from None
  return network, {"source": network.source, "path": os.path.abspath(network.path),
                   "sha1": file_sha1(network.path)}


def build_classifier(image_size, num_classes):
  """A small CNN on [-1, 1] images that returns class logits: the `cls` metric's judge."""
  inputs = keras.Input((image_size, image_size, 3))
  # Large images are strided down first so the network stays small.
  stride = max(1, image_size // 64)
  x = keras.layers.Conv2D(32, 3, strides=stride, padding="same", activation="relu")(inputs)
  for filters in (64, 128):
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(0.2)(x)
  outputs = keras.layers.Dense(num_classes)(x)
  return keras.Model(inputs, outputs, name="cls_classifier")


def _read_real(dataset, *, image_size, num, batch_size, data_dir, split, conditional, seed=0):
  """(uint8 images, int32 labels) of up to `num` real examples in a seeded random order."""
  ds = data.make_dataset(dataset, image_size=image_size, batch_size=batch_size, data_dir=data_dir,
                         split=split, shuffle=True, repeat=False, seed=seed, drop_remainder=False,
                         conditional=conditional)
  images, labels, count = [], [], 0
  for batch_images, batch_labels in ds:
    take = min(num - count, int(batch_images.shape[0]))
    images.append(to_pixels(batch_images[:take].numpy()))
    labels.append(batch_labels[:take].numpy())
    count += take
    if count >= num:
      break
  if not images:
    raise EvaluationError(f"data set {dataset} (split {split}) yielded no images")
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def load_or_train_classifier(dataset, *, image_size, num_classes, data_dir=None, split="train",
                             train_examples=10000, epochs=3, heldout_fraction=0.1, seed=0,
                             batch_size=64, log=None):
  """The `cls` judge: a small CNN trained on real images, cached per data set and settings.

  The first `heldout_fraction` of `train_examples` seeded-shuffled real
  examples is held out; the classifier's accuracy there is the reference
  the class-consistency of generated images is read against.

  Returns:
    (model, info): a Keras model from [-1, 1] images to logits, and a dict
    with "heldout_accuracy", "num_train", "num_heldout", "epochs", "path".
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  key = _cache_key(dataset, split, f"{image_size}px", f"{train_examples}ex", data_dir, num_classes,
                   epochs, heldout_fraction, seed, "v1")
  directory = os.path.join(cache_root(), "classifiers", key)
  model_path = os.path.join(directory, "classifier.keras")
  info_path = os.path.join(directory, "info.json")
  if os.path.isfile(model_path) and os.path.isfile(info_path):
    with open(info_path) as f:
      info = json.load(f)
    log(f"cls: cached classifier {model_path} (held-out accuracy {info['heldout_accuracy']:.4f})")
    return keras.saving.load_model(model_path, compile=False), info
  images, labels = _read_real(dataset, image_size=image_size, num=train_examples, batch_size=256,
                              data_dir=data_dir, split=split, conditional=True, seed=seed + 1)
  if labels.max() >= num_classes:
    raise EvaluationError(f"data set {dataset} has labels up to {labels.max()}, but the generator "
                          f"has {num_classes} classes")
  num_heldout = max(1, int(round(len(images) * heldout_fraction)))
  if len(images) - num_heldout < num_classes:
    raise EvaluationError(f"cls: {len(images)} real images are too few to train a classifier; "
                          "raise --cls_train_examples")
  keras.utils.set_random_seed(seed)
  model = build_classifier(image_size, num_classes)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])

  def as_dataset(x, y, shuffle):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
      ds = ds.shuffle(len(x), seed=seed)
    return ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32) / 127.5 - 1.0, b))

  train = as_dataset(images[num_heldout:], labels[num_heldout:], True)
  heldout = as_dataset(images[:num_heldout], labels[:num_heldout], False)
  started = time.monotonic()
  model.fit(train, epochs=epochs, verbose=0, shuffle=False)  # The dataset shuffles.
  _, accuracy = model.evaluate(heldout, verbose=0)
  info = {"heldout_accuracy": float(accuracy), "num_train": int(len(images) - num_heldout),
          "num_heldout": int(num_heldout), "epochs": int(epochs), "path": model_path}
  log(f"cls: trained a classifier on {info['num_train']} real images for {epochs} epochs in "
      f"{time.monotonic() - started:.0f}s: held-out accuracy {accuracy:.4f}")
  os.makedirs(directory, exist_ok=True)
  model.save(model_path)
  with open(info_path, "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
  return model, info


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
    if inception is not None:
      features = inception(to_pixels(images).astype(np.float32))
      results.setdefault("pool_3", []).append(features["pool_3"])
      if need_logits:
        results.setdefault("logits", []).append(features["logits"])
    if classifier is not None:
      # The judge sees the same 8-bit images as Inception does.
      pixels = to_pixels(images).astype(np.float32) / 127.5 - 1.0
      logits = classifier(pixels, training=False)
      results.setdefault("cls_predictions", []).append(np.argmax(np.asarray(logits), axis=-1))
    if meter:
      meter.update(len(images))
  return {key: np.concatenate(parts) for key, parts in results.items()}


def real_statistics(dataset, *, image_size, num_samples, batch_size, inception, inception_info,
                    data_dir=None, split="train", need_features=False, use_cache=True, log=None):
  """Inception statistics of real images, cached per data set, split, size, count and network.

  The cache lives in `<cache_root()>/stats/`: `<key>.npz` (mu, sigma and a
  description) and `<key>_features.npy` (the float32 pool_3 features, 8 KB
  per image, which KID and precision/recall need). The key does not see
  changes to the files of a folder data set: delete the cache after editing one.

  Returns:
    A dict with "mu", "sigma", "num_images", "cached" (bool), "path" and,
    when `need_features`, "pool_3".
  """
  from sagan_tf import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  key = _cache_key(dataset, split, f"{image_size}px", f"{num_samples}", data_dir,
                   inception_info["sha1"])
  directory = os.path.join(cache_root(), "stats")
  stats_path = os.path.join(directory, key + ".npz")
  features_path = os.path.join(directory, key + "_features.npy")
  if use_cache and os.path.isfile(stats_path) and (not need_features or os.path.isfile(features_path)):
    mu, sigma, meta = metrics_lib.load_statistics(stats_path)
    result = {"mu": mu, "sigma": sigma, "num_images": int(meta.get("num_images", 0)),
              "cached": True, "path": stats_path}
    if need_features:
      result["pool_3"] = np.load(features_path)
    log(f"real statistics: cached {stats_path}")
    return result
  ds = data.make_dataset(dataset, image_size=image_size, batch_size=batch_size, data_dir=data_dir,
                         split=split, shuffle=True, repeat=False, seed=0, drop_remainder=False,
                         conditional=False)
  meter = Progress(f"real images ({dataset})", num_samples)
  features, count = [], 0
  for images, _ in ds:
    take = min(num_samples - count, int(images.shape[0]))
    features.append(inception(to_pixels(images[:take].numpy()).astype(np.float32))["pool_3"])
    count += take
    meter.update(take)
    if count >= num_samples:
      break
  if count < 2:
    raise EvaluationError(f"data set {dataset} (split {split}) has {count} images; FID needs >= 2")
  if count < num_samples:
    log(f"warning: {dataset} (split {split}) has only {count} images, fewer than "
        f"--num_samples={num_samples}; the real side uses all {count}")
  pool = np.concatenate(features).astype(np.float32)
  mu, sigma = metrics_lib.compute_statistics(pool)
  result = {"mu": mu, "sigma": sigma, "num_images": int(count), "cached": False, "path": stats_path}
  if need_features:
    result["pool_3"] = pool
  if use_cache:
    os.makedirs(directory, exist_ok=True)
    # Temporary names plus renames: a killed run never leaves half a cache entry.
    tmp = stats_path + ".tmp.npz"
    metrics_lib.save_statistics(tmp, mu, sigma, dataset=dataset, split=split, image_size=image_size,
                        num_images=count, inception_sha1=inception_info["sha1"])
    os.replace(tmp, stats_path)
    tmp = features_path + ".tmp.npy"
    np.save(tmp, pool)
    os.replace(tmp, features_path)
    log(f"real statistics: cached to {stats_path}")
  return result


def compute_metrics(metrics, *, fake, real=None, labels=None, classifier_info=None, is_splits=10,
                    kid_subsets=100, kid_subset_size=1000, pr_k=3, seed=0):
  """The requested metrics from generated and real features.

  Returns:
    An ordered dict of floats: fid; is_mean, is_std; kid_mean, kid_std;
    precision, recall; cls_accuracy, cls_real_accuracy.
  """
  from sagan_tf import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  results = {}
  if "fid" in metrics:
    mu, sigma = metrics_lib.compute_statistics(fake["pool_3"])
    results["fid"] = metrics_lib.frechet_distance(mu, sigma, real["mu"], real["sigma"])
  if "is" in metrics:
    results["is_mean"], results["is_std"] = metrics_lib.inception_score(fake["logits"], is_splits)
  if "kid" in metrics:
    results["kid_mean"], results["kid_std"] = metrics_lib.kernel_inception_distance(
        real["pool_3"], fake["pool_3"], num_subsets=kid_subsets, subset_size=kid_subset_size,
        seed=seed)
  if "pr" in metrics:
    results["precision"], results["recall"] = metrics_lib.precision_recall(
        real["pool_3"], fake["pool_3"], k=pr_k)
  if "cls" in metrics:
    results["cls_accuracy"] = float(np.mean(fake["cls_predictions"] == labels))
    results["cls_real_accuracy"] = float(classifier_info["heldout_accuracy"])
  return results


def format_table(results):
  """The metrics as an aligned two-column text table."""
  rows = [("metric", "value")]
  if "fid" in results:
    rows.append(("FID", f"{results['fid']:.4f}"))
  if "is_mean" in results:
    rows.append(("Inception Score", f"{results['is_mean']:.4f} +- {results['is_std']:.4f}"))
  if "kid_mean" in results:
    rows.append(("KID", f"{results['kid_mean']:.6f} +- {results['kid_std']:.6f}"))
  if "precision" in results:
    rows.append(("precision (k=3)", f"{results['precision']:.4f}"))
    rows.append(("recall (k=3)", f"{results['recall']:.4f}"))
  if "cls_accuracy" in results:
    rows.append(("class consistency", f"{results['cls_accuracy']:.4f}"))
    rows.append(("  classifier on real", f"{results['cls_real_accuracy']:.4f}"))
  width = max(len(name) for name, _ in rows)
  lines = [f"{name:<{width}}  {value}" for name, value in rows]
  lines.insert(1, "-" * max(len(line) for line in lines))
  return "\n".join(lines)


# Sheets.

def make_grid(images, columns, pad=2, pad_value=255):
  """uint8 [rows * (H + pad) + pad, columns * (W + pad) + pad, 3] grid, row-major."""
  images = np.asarray(images, np.uint8)
  count, height, width = images.shape[:3]
  rows = max(1, math.ceil(count / columns))
  grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), pad_value, np.uint8)
  for index in range(count):
    top = pad + (index // columns) * (height + pad)
    left = pad + (index % columns) * (width + pad)
    grid[top:top + height, left:left + width] = images[index]
  return grid


def upscale(images, factor):
  """Nearest-neighbour enlargement of uint8 [N, H, W, C] images by an integer factor."""
  if factor <= 1:
    return images
  return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def save_png(path, array):
  PIL.Image.fromarray(np.asarray(array, np.uint8)).save(path, format="PNG")


def heat_colors(values):
  """A blue-cyan-yellow-red colour ramp of values in [0, 1]: float [..., 3] in [0, 1]."""
  values = np.clip(values, 0.0, 1.0)[..., None]
  centres = np.array([0.75, 0.5, 0.25])  # Peaks of red, green and blue along the ramp.
  return np.clip(1.5 - np.abs(4.0 * (values - centres)), 0.0, 1.0)


def attention_overlay(image, key_map, alpha=0.55):
  """Blends the heat map of one query's attention over the image.

  The map is stretched to its own [min, max], so the sheet shows where a
  query looks even when its weights are nearly uniform (as early in training).

  Args:
    image: uint8 [S, S, 3].
    key_map: float [r/2, r/2], the attention weights over the pooled keys.
    alpha: weight of the heat map.

  Returns:
    uint8 [S, S, 3].
  """
  size = image.shape[0]
  resized = np.asarray(PIL.Image.fromarray(np.asarray(key_map, np.float32), mode="F").resize(
      (size, size), PIL.Image.BILINEAR))
  resized = (resized - resized.min()) / max(float(resized.max() - resized.min()), 1e-12)
  heat = heat_colors(resized) * 255.0
  return np.clip((1 - alpha) * image.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


def mark_pixel(image, y, x, color=(0, 255, 0), radius=2):
  """Draws a square outline around pixel (y, x) of a uint8 image, in place."""
  size = image.shape[0]
  top, bottom = max(0, y - radius), min(size - 1, y + radius)
  left, right = max(0, x - radius), min(size - 1, x + radius)
  image[top, left:right + 1] = color
  image[bottom, left:right + 1] = color
  image[top:bottom + 1, left] = color
  image[top:bottom + 1, right] = color
  return image


def default_attention_pixels(image_size):
  """Three query pixels (y, x): upper left, centre and lower middle."""
  quarter = image_size // 4
  return [(quarter, quarter), (image_size // 2, image_size // 2), (3 * quarter, image_size // 2)]


def attention_sheet(sampler, z, labels, pixels, scale=1):
  """One row per sample: the image with the query pixels marked, then one heat map per query.

  `pixels` are (y, x) in image pixels; each maps to the attention layer's
  grid at resolution r as (y * r // S, x * r // S).
  """
  images, attention = sampler.generate_with_attention(z, labels)
  size = sampler.image_size
  resolution = int(round(math.sqrt(attention.shape[1])))
  keys = int(round(math.sqrt(attention.shape[2])))
  pixels_uint8 = upscale(to_pixels(images), scale)
  tiles = []
  for index in range(len(images)):
    marked = pixels_uint8[index].copy()
    for y, x in pixels:
      mark_pixel(marked, y * scale, x * scale, radius=max(2, scale))
    tiles.append(marked)
    for y, x in pixels:
      query = (y * resolution // size) * resolution + (x * resolution // size)
      overlay = attention_overlay(pixels_uint8[index], attention[index, query].reshape(keys, keys))
      tiles.append(mark_pixel(overlay, y * scale, x * scale, radius=max(2, scale)))
  return make_grid(np.stack(tiles), columns=1 + len(pixels))


def _label_rows(grid, names, row_height, pad=2):
  """Adds a white margin left of a grid with one name per row."""
  width = min(140, 7 * max(len(name) for name in names) + 8)
  canvas = PIL.Image.new("RGB", (grid.shape[1] + width, grid.shape[0]), (255, 255, 255))
  canvas.paste(PIL.Image.fromarray(grid), (width, 0))
  draw = PIL.ImageDraw.Draw(canvas)
  for row, name in enumerate(names):
    top = pad + row * (row_height + pad) + max(0, row_height // 2 - 6)
    draw.text((4, top), name[:20], fill=(0, 0, 0))
  return np.asarray(canvas)


def write_sheets(sampler, output_dir, *, seed=0, truncation=0.0, class_names=None,
                 attention_pixels=None, columns=10, max_classes=20):
  """Writes the PNG sheets and returns {name: path}.

  samples.png: an 8x8 grid of random samples (balanced classes).
  classes.png: one row per class (the first `max_classes`), `columns` samples each.
  interpolation.png: 4 rows of `columns` images along the line between two z,
    one class per row.
  attention.png: see `attention_sheet`; skipped when `attention_pixels` is
    an empty list or the sampler has no attention endpoint.
  Small images are enlarged (nearest neighbour) to at least 64 pixels.
  """
  rng = np.random.default_rng(seed + 7919)  # Independent of the metric samples.
  size, z_dim, num_classes = sampler.image_size, sampler.z_dim, sampler.num_classes
  scale = max(1, 64 // size)
  paths = {}

  def generate(z, labels):
    return upscale(to_pixels(sampler.generate(z, labels)), scale)

  z = sample_noise(rng, 64, z_dim, truncation)
  paths["samples"] = os.path.join(output_dir, SHEET_FILES["samples"])
  save_png(paths["samples"], make_grid(generate(z, balanced_labels(rng, 64, num_classes)), 8))

  if num_classes:
    shown = min(num_classes, max_classes)
    z = sample_noise(rng, shown * columns, z_dim, truncation)
    labels = np.repeat(np.arange(shown, dtype=np.int32), columns)
    grid = make_grid(generate(z, labels), columns)
    names = [str(n) for n in (class_names or [])[:shown]] or [str(i) for i in range(shown)]
    paths["classes"] = os.path.join(output_dir, SHEET_FILES["classes"])
    save_png(paths["classes"], _label_rows(grid, names, size * scale))

  rows = 4
  ends = sample_noise(rng, 2 * rows, z_dim, truncation).reshape(rows, 2, z_dim)
  weights = np.linspace(0.0, 1.0, columns, dtype=np.float32)[None, :, None]
  z = (ends[:, :1] * (1.0 - weights) + ends[:, 1:] * weights).reshape(-1, z_dim)
  row_labels = rng.integers(0, num_classes, rows) if num_classes else np.zeros(rows)
  labels = np.repeat(row_labels.astype(np.int32), columns)
  paths["interpolation"] = os.path.join(output_dir, SHEET_FILES["interpolation"])
  save_png(paths["interpolation"], make_grid(generate(z, labels), columns))

  if attention_pixels is None:
    attention_pixels = default_attention_pixels(size)
  if attention_pixels and sampler.has_attention:
    z = sample_noise(rng, 4, z_dim, truncation)
    labels = balanced_labels(rng, 4, num_classes)
    paths["attention"] = os.path.join(output_dir, SHEET_FILES["attention"])
    save_png(paths["attention"], attention_sheet(sampler, z, labels, attention_pixels, scale))
  return paths


# The whole evaluation.

@dataclasses.dataclass
class EvaluationOptions:
  """What `run_evaluation` does; evaluate.py fills it from its flags (see there)."""
  checkpoint: typing.Optional[str] = None
  checkpoint_step: typing.Optional[int] = None
  saved_model: typing.Optional[str] = None
  dataset: typing.Optional[str] = None
  data_dir: typing.Optional[str] = None
  split: str = "train"
  num_samples: int = 50000
  batch_size: int = 100
  metrics: typing.Tuple[str, ...] = DEFAULT_METRICS
  metrics_explicit: bool = False
  inception_path: typing.Optional[str] = None
  inception_standin: int = 0
  is_splits: int = 10
  kid_subsets: int = 100
  kid_subset_size: int = 1000
  pr_k: int = 3
  truncation: float = 0.0
  use_ema: bool = True
  output_dir: typing.Optional[str] = None
  seed: int = 0
  sheets: bool = True
  attention_pixels: typing.Optional[typing.List[typing.Tuple[int, int]]] = None
  cls_train_examples: int = 10000
  cls_epochs: int = 3
  use_cache: bool = True


def _finite(results):
  bad = [name for name, value in results.items() if not math.isfinite(value)]
  if bad:
    raise EvaluationError(f"non-finite metric values for {bad}; see the log above")


def run_evaluation(options, log=None):
  """Loads the generator, computes the metrics, writes metrics.json and the sheets.

  Returns:
    The dict written to metrics.json: {"metrics": {...}, "config": {...},
    "sheets": {...}, "elapsed_seconds": float}.

  Raises:
    EvaluationError, run_dir.RunDirError, export.ExportError,
    data.DataError: one-line messages for the command line.
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  started = time.monotonic()
  if any(m in options.metrics for m in INCEPTION_METRICS) and not options.inception_standin:
    # Missing weights fail before a large generator is restored.
    _find_inception_weights(options.inception_path)
  sampler, info = load_sampler(checkpoint=options.checkpoint, checkpoint_step=options.checkpoint_step,
                               saved_model=options.saved_model, use_ema=options.use_ema)
  metrics = list(options.metrics)
  dataset = options.dataset or info["dataset"]
  data_dir = options.data_dir if options.data_dir is not None else info["data_dir"]
  needs_real = any(m in metrics for m in INCEPTION_METRICS + ("cls",))
  if needs_real and not dataset:
    raise EvaluationError("the SavedModel does not name its training data set: pass --dataset")
  if "cls" in metrics and not sampler.num_classes:
    raise EvaluationError("--metrics=cls needs a class-conditional generator; this one has no classes")
  if options.attention_pixels:
    for y, x in options.attention_pixels:
      if not (0 <= y < sampler.image_size and 0 <= x < sampler.image_size):
        raise EvaluationError(f"--attention_pixels: ({y}, {x}) is outside the "
                              f"{sampler.image_size}x{sampler.image_size} image")
    if options.sheets and not sampler.has_attention:
      raise EvaluationError("this SavedModel has no `attention` signature; use --checkpoint for "
                            "attention maps")
  if "is" in metrics and options.is_splits > options.num_samples:
    raise EvaluationError(f"--is_splits={options.is_splits} exceeds "
                          f"--num_samples={options.num_samples}")
  output_dir = options.output_dir or os.path.join(info["model_dir"], "eval", f"step_{info['step']}")
  os.makedirs(output_dir, exist_ok=True)

  inception, inception_info = None, None
  if any(m in metrics for m in INCEPTION_METRICS):
    inception, inception_info = load_feature_network(options.inception_path,
                                                     options.inception_standin)
    if "is" in metrics and not inception.has_logits:
      if options.metrics_explicit:
        raise EvaluationError(
            f"--metrics=is needs Inception logits, which the {inception.source} weights "
            f"({inception_info['path']}) lack; pass the TF frozen graph classify_image_graph_def.pb "
            "with --inception_path, or drop is from --metrics")
      log(f"note: Inception Score skipped: the {inception.source} weights have no logits "
          "(the TF frozen graph classify_image_graph_def.pb has them)")
      metrics.remove("is")
    if not metrics:
      raise EvaluationError("no metric left to compute")

  classifier, classifier_info = None, None
  if "cls" in metrics:
    classifier, classifier_info = load_or_train_classifier(
        dataset, image_size=sampler.image_size, num_classes=sampler.num_classes, data_dir=data_dir,
        split=options.split, train_examples=options.cls_train_examples, epochs=options.cls_epochs,
        seed=options.seed, log=log)

  if any(m in metrics for m in ("fid", "kid", "pr")):
    # The real images are read after the generated ones: check that they
    # exist (and decode, for a folder) before the expensive generation.
    data.get_dataset_info(dataset, data_dir, options.split)
  rng = np.random.default_rng(options.seed)
  z = sample_noise(rng, options.num_samples, sampler.z_dim, options.truncation)
  labels = balanced_labels(rng, options.num_samples, sampler.num_classes)
  fake = generated_outputs(sampler, z, labels, batch_size=options.batch_size, inception=inception,
                           classifier=classifier, need_logits="is" in metrics)
  real = None
  if any(m in metrics for m in ("fid", "kid", "pr")):
    real = real_statistics(dataset, image_size=sampler.image_size, num_samples=options.num_samples,
                           batch_size=options.batch_size, inception=inception,
                           inception_info=inception_info, data_dir=data_dir, split=options.split,
                           need_features="kid" in metrics or "pr" in metrics,
                           use_cache=options.use_cache, log=log)
  results = compute_metrics(metrics, fake=fake, real=real, labels=labels,
                            classifier_info=classifier_info, is_splits=options.is_splits,
                            kid_subsets=options.kid_subsets, kid_subset_size=options.kid_subset_size,
                            pr_k=options.pr_k, seed=options.seed)
  _finite(results)

  sheets = {}
  if options.sheets:
    sheets = write_sheets(sampler, output_dir, seed=options.seed, truncation=options.truncation,
                          class_names=info["class_names"], attention_pixels=options.attention_pixels)
  report = {
      "metrics": results,
      "config": {
          "model": info["source"], "step": info["step"], "ema": info["ema"],
          "dataset": dataset, "data_dir": data_dir, "split": options.split,
          "num_samples": options.num_samples,
          "num_real": real["num_images"] if real else None,
          "real_statistics": real["path"] if real else None,
          "batch_size": options.batch_size, "metrics": metrics,
          "truncation": options.truncation, "seed": options.seed,
          "image_size": sampler.image_size, "num_classes": sampler.num_classes,
          "inception": inception_info, "is_splits": options.is_splits if "is" in metrics else None,
          "kid": {"num_subsets": options.kid_subsets, "subset_size": options.kid_subset_size}
                 if "kid" in metrics else None,
          "pr_k": options.pr_k if "pr" in metrics else None,
          "cls_classifier": classifier_info,
          "labels": "balanced: each class equally often, in random order",
          "sagan_tf_version": sagan_tf.__version__,
      },
      "sheets": sheets,
      "output_dir": os.path.abspath(output_dir),
      "elapsed_seconds": round(time.monotonic() - started, 2),
  }
  path = os.path.join(output_dir, METRICS_FILE)
  from sagan_tf import storage  # pylint: disable=g-import-not-at-top
  with storage.writing(METRICS_FILE, output_dir, lambda: storage.remove_quietly(path + ".tmp")):
    with open(path + ".tmp", "w") as f:
      json.dump(report, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
  return report
