"""The judge of the `cls` metric: a small CNN trained on real images and cached per setting."""

import json
import os
import sys
import time

import keras
import tensorflow as tf

from sagan_tf import cache
from sagan_tf.evaluation.errors import EvaluationError
from sagan_tf.evaluation.real import read_real


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


def _as_dataset(images, labels, batch_size, shuffle_seed=None):
  """uint8 images and labels as batches of [-1, 1] floats, shuffled when a seed is given."""
  ds = tf.data.Dataset.from_tensor_slices((images, labels))
  if shuffle_seed is not None:
    ds = ds.shuffle(len(images), seed=shuffle_seed)
  return ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32) / 127.5 - 1.0, b))


def _train_classifier(images, labels, *, num_classes, num_heldout, epochs, seed, batch_size):
  """(model, held-out accuracy): trained on all but the first `num_heldout` examples."""
  keras.utils.set_random_seed(seed)
  model = build_classifier(images.shape[1], num_classes)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  train = _as_dataset(images[num_heldout:], labels[num_heldout:], batch_size, shuffle_seed=seed)
  heldout = _as_dataset(images[:num_heldout], labels[:num_heldout], batch_size)
  model.fit(train, epochs=epochs, verbose=0, shuffle=False)  # The dataset shuffles.
  _, accuracy = model.evaluate(heldout, verbose=0)
  return model, float(accuracy)


def _read_training_images(dataset, *, image_size, num_classes, train_examples, data_dir, split,
                          heldout_fraction, seed):
  """(images, labels, num_heldout), checked to be enough for `num_classes`."""
  images, labels = read_real(dataset, image_size=image_size, num=train_examples, batch_size=256,
                             data_dir=data_dir, split=split, conditional=True, seed=seed + 1)
  if labels.max() >= num_classes:
    raise EvaluationError(f"data set {dataset} has labels up to {labels.max()}, but the generator "
                          f"has {num_classes} classes")
  num_heldout = max(1, int(round(len(images) * heldout_fraction)))
  if len(images) - num_heldout < num_classes:
    raise EvaluationError(f"cls: {len(images)} real images are too few to train a classifier; "
                          "raise --cls_train_examples")
  return images, labels, num_heldout


def load_or_train_classifier(dataset, *, image_size, num_classes, data_dir=None, split="train",
                             train_examples=10000, epochs=3, heldout_fraction=0.1, seed=0,
                             batch_size=64, use_cache=True, log=None):
  """The `cls` judge: a small CNN trained on real images, cached per data set and settings.

  The first `heldout_fraction` of `train_examples` seeded-shuffled real
  examples is held out; the classifier's accuracy there is the reference
  the class-consistency of generated images is read against. With
  `use_cache=False` the cache is neither read nor written.

  Returns:
    (model, info): a Keras model from [-1, 1] images to logits, and a dict
    with "heldout_accuracy", "num_train", "num_heldout", "epochs", "path".
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  key = cache.cache_key(dataset, split, f"{image_size}px", f"{train_examples}ex", data_dir,
                        num_classes, epochs, heldout_fraction, seed, "v1")
  directory = os.path.join(cache.cache_dir(cache.CLASSIFIERS_DIR), key)
  model_path = os.path.join(directory, "classifier.keras")
  info_path = os.path.join(directory, "info.json")
  if use_cache and os.path.isfile(model_path) and os.path.isfile(info_path):
    with open(info_path) as f:
      info = json.load(f)
    log(f"cls: cached classifier {model_path} (held-out accuracy {info['heldout_accuracy']:.4f})")
    return keras.saving.load_model(model_path, compile=False), info
  images, labels, num_heldout = _read_training_images(
      dataset, image_size=image_size, num_classes=num_classes, train_examples=train_examples,
      data_dir=data_dir, split=split, heldout_fraction=heldout_fraction, seed=seed)
  started = time.monotonic()
  model, accuracy = _train_classifier(images, labels, num_classes=num_classes,
                                      num_heldout=num_heldout, epochs=epochs, seed=seed,
                                      batch_size=batch_size)
  info = {"heldout_accuracy": accuracy, "num_train": int(len(images) - num_heldout),
          "num_heldout": int(num_heldout), "epochs": int(epochs), "path": model_path}
  log(f"cls: trained a classifier on {info['num_train']} real images for {epochs} epochs in "
      f"{time.monotonic() - started:.0f}s: held-out accuracy {accuracy:.4f}")
  if use_cache:
    os.makedirs(directory, exist_ok=True)
    model.save(model_path)
    with open(info_path, "w") as f:
      json.dump(info, f, indent=2, sort_keys=True)
  return model, info
