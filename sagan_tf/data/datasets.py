"""tf.data input pipelines for Animal-MNIST, TFDS image data sets and class-folder data sets."""

import dataclasses
import os
import typing

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sagan_tf.data import embedded
from sagan_tf.data import folder
from sagan_tf.data import preprocessing
from sagan_tf.data.preprocessing import DataError

_IMAGE_FEATURE = "image"
_LABEL_FEATURE = "label"
_SINGLE_SPLIT = "train"
_ANIMAL_MNIST_PADDED_SIZE = 32
# ILSVRC2012 cannot be downloaded by TFDS; its builder reads these archives.
_IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model needs to know about a data set before it is built.

  Attributes:
    name: the data set string as given ("animal_mnist", "cifar10", "folder:/x").
    num_classes: number of labels; 0 for a data set without labels.
    class_names: names of labels 0..num_classes-1.
    num_examples: examples in the split, or None when TFDS does not record it.
    skipped: (path, reason) of the images of a folder data set that were
      skipped as undecodable (`skip_bad_images`).
  """
  name: str
  num_classes: int
  class_names: typing.Tuple[str, ...]
  num_examples: typing.Optional[int]
  skipped: typing.Tuple[typing.Tuple[str, str], ...] = ()


def _is_folder(dataset):
  return dataset.startswith(folder.PREFIX)


def _folder_root(dataset):
  root = os.path.expanduser(dataset[len(folder.PREFIX):])
  if not root:
    raise DataError(f"data set {dataset!r} names no folder; use folder:/path/to/class_folders")
  return root


def _require_single_split(dataset, split):
  if split != _SINGLE_SPLIT:
    raise DataError(f"data set {dataset} has a single split {_SINGLE_SPLIT!r}, got split={split!r}; "
                    f"set data.split={_SINGLE_SPLIT}")


def _tfds_builder(dataset, data_dir):
  try:
    return tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f"unknown data set {dataset!r}: not {embedded.NAME!r}, not {folder.PREFIX}/path, "
                    "and not a TFDS name (see https://www.tensorflow.org/datasets/catalog)") from None
  except ValueError as error:
    # A known TFDS name with an unknown config or version, e.g. "lsun/kitchenx";
    # TFDS adds lines of suggestions after the first.
    reason = (str(error).strip() or type(error).__name__).splitlines()[0]
    raise DataError(f"data set {dataset!r} cannot be loaded from TFDS: {reason}") from None


def _not_prepared_error(builder, dataset):
  """The DataError for a TFDS data set whose files are not in its data_dir."""
  root = str(builder.data_dir_root)
  if builder.name == "imagenet2012":
    manual_dir = f"{root}/downloads/manual"
    return DataError(
        f"data set {dataset} is not prepared in {root}; TFDS cannot download ImageNet: put the manually "
        f"downloaded {' and '.join(_IMAGENET_ARCHIVES)} in {manual_dir}/ and run "
        f"`tfds build {dataset} --data_dir={root}`, or pass --data_dir of a prepared copy")
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    return DataError(
        f"data set {dataset} is not prepared in {root} and needs files downloaded by hand into "
        f"{root}/downloads/manual/ (see `tfds build {dataset}` instructions); then run "
        f"`tfds build {dataset} --data_dir={root}`, or pass --data_dir of a prepared copy")
  return DataError(
      f"data set {dataset} is not prepared in {root}; run `tfds build {dataset} --data_dir={root}` "
      "on a machine with internet access, or pass --data_dir of a prepared copy")


def _tfds_as_dataset(builder, dataset, split, **kwargs):
  """`builder.as_dataset`, with missing data and unknown splits as DataError.

  Never downloads: `as_dataset` only reads prepared files. Trying it, rather
  than checking `builder.data_path`, also accepts `tfds.testing.mock_data`.
  """
  try:
    return builder.as_dataset(split=split, **kwargs)
  except AssertionError as error:
    if "could not find data" in str(error):
      raise _not_prepared_error(builder, dataset) from None
    raise
  except ValueError as error:
    if "split" not in str(error).lower():
      raise
    raise DataError(f"data set {dataset} has no split {split!r}; its splits are "
                    f"{sorted(builder.info.splits)}; set data.split") from None


def _tfds_image_feature(builder, dataset):
  features = builder.info.features
  if _IMAGE_FEATURE not in features or not isinstance(features[_IMAGE_FEATURE], tfds.features.Image):
    raise DataError(f"data set {dataset} has no {_IMAGE_FEATURE!r} image feature; "
                    f"its features are {sorted(features)}")
  return features[_IMAGE_FEATURE]


def _tfds_class_names(builder):
  """Label names, or () for a data set without a class label (celeb_a, lsun)."""
  features = builder.info.features
  label = features[_LABEL_FEATURE] if _LABEL_FEATURE in features else None
  if not isinstance(label, tfds.features.ClassLabel):
    return ()
  return tuple(label.names)


def _tfds_num_examples(builder, split):
  try:
    return int(builder.info.splits[split].num_examples) or None
  except (KeyError, ValueError, TypeError):
    return None


def get_dataset_info(dataset, data_dir=None, split="train", skip_bad_images=False):
  """Describes a data set: its classes and size.

  TFDS data sets are checked to be prepared, without network access. Folder
  data sets have every image read and decoded by the input pipeline's
  decoder (`folder.check_images`, cached per file list, sizes and mtimes)
  so that a bad file is named now rather than failing the input pipeline
  mid-training.

  Args:
    dataset: "animal_mnist", a TFDS name such as "imagenet2012", "cifar10" or
      "lsun/bedroom", or "folder:/path" for one sub-folder per class.
    data_dir: TFDS data directory; None takes TFDS' default.
    split: split to describe.
    skip_bad_images: skip the images of a folder that cannot be decoded
      (listed in `DatasetInfo.skipped`) instead of raising DataError.

  Returns:
    A `DatasetInfo`.

  Raises:
    DataError: if the data set is unknown, not prepared (TFDS), badly laid out
      or holds a corrupt image (folder), or `split` does not exist.
  """
  if dataset == embedded.NAME:
    _require_single_split(dataset, split)
    images, _, class_names = embedded.load_animal_mnist()
    return DatasetInfo(dataset, len(class_names), class_names, len(images))
  if _is_folder(dataset):
    _require_single_split(dataset, split)
    listing, bad = folder.check_images(folder.list_image_folder(_folder_root(dataset)),
                                       skip_bad=skip_bad_images)
    return DatasetInfo(dataset, len(listing.class_names), listing.class_names, len(listing.paths),
                       skipped=tuple(bad))
  builder = _tfds_builder(dataset, data_dir)
  _tfds_image_feature(builder, dataset)
  # Fails fast, without network access, if the data is not prepared.
  _tfds_as_dataset(builder, dataset, split)
  class_names = _tfds_class_names(builder)
  return DatasetInfo(dataset, len(class_names), class_names, _tfds_num_examples(builder, split))


def _shard(ds, input_context):
  if input_context is not None and input_context.num_input_pipelines > 1:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return ds


def _animal_mnist_source(input_context):
  """(28x28 uint8 image, int64 label) pairs, padded to 32x32 at decode time."""
  images, labels, _ = embedded.load_animal_mnist()
  ds = tf.data.Dataset.from_tensor_slices((images, labels))

  def decode(image):
    # Padding with background, rather than resizing, keeps the silhouettes
    # sharp at 32x32, the smallest size the architectures support.
    pad = (_ANIMAL_MNIST_PADDED_SIZE - embedded.IMAGE_SIZE) // 2
    image = tf.pad(image, [[pad, pad], [pad, pad]], constant_values=embedded.BACKGROUND_VALUE)
    return preprocessing.to_rgb(image[..., tf.newaxis])

  return _shard(ds, input_context), decode, len(images)


def _folder_source(dataset, conditional, input_context, skip_bad_images):
  """(file path, label) pairs; decoding reads the file."""
  root = _folder_root(dataset)
  # Checked (or taken from the scan cache) here too, so that the pipeline
  # never meets a file that fails, and skipped files stay out of it.
  listing, _ = folder.check_images(folder.list_image_folder(root), skip_bad=skip_bad_images)
  if conditional and len(listing.class_names) == 1:
    raise DataError(
        f"image folder {root} has only one class sub-folder {listing.class_names[0]!r}; a conditional model "
        "needs one folder per class (or set model.num_classes=0 for an unconditional model)")
  ds = tf.data.Dataset.from_tensor_slices(
      (list(listing.paths), np.array(listing.labels, dtype=np.int64)))

  return _shard(ds, input_context), folder.decode_image_file, len(listing.paths)


def _tfds_source(dataset, data_dir, split, shuffle, seed, input_context):
  """(encoded image, label) pairs read from TFDS, decoded after the shuffle."""
  builder = _tfds_builder(dataset, data_dir)
  image_feature = _tfds_image_feature(builder, dataset)
  sharded = input_context is not None and input_context.num_input_pipelines > 1
  # Whole files per input pipeline save every worker reading all records, but
  # TFDS refuses when a split has fewer files than pipelines.
  try:
    num_files = len(builder.info.splits[split].file_instructions)
  except (KeyError, ValueError, TypeError):
    num_files = 0
  shard_files = sharded and num_files >= input_context.num_input_pipelines
  read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=input_context if shard_files else None)
  ds = _tfds_as_dataset(builder, dataset, split, shuffle_files=shuffle, read_config=read_config,
                        decoders={_IMAGE_FEATURE: tfds.decode.SkipDecoding()})
  has_labels = bool(_tfds_class_names(builder))

  def select(example):
    label = example[_LABEL_FEATURE] if has_labels else tf.constant(0, tf.int64)
    return example[_IMAGE_FEATURE], tf.cast(label, tf.int64)

  ds = ds.map(select)
  if sharded and not shard_files:
    ds = _shard(ds, input_context)

  def decode(encoded):
    return preprocessing.to_rgb(image_feature.decode_example(encoded))

  return ds, decode, _tfds_num_examples(builder, split)


def make_dataset(dataset, *, image_size, batch_size, data_dir=None, split="train", shuffle=True,
                 repeat=True, random_flip=False, shuffle_buffer=10000, seed=None, input_context=None,
                 drop_remainder=True, conditional=True, skip_bad_images=False):
  """Builds the input pipeline of real images and labels.

  Every source yields cheap records first (28x28 arrays, file paths, encoded
  JPEGs), which are sharded, shuffled and repeated before the parallel map
  that decodes them, crops the largest centred square, resizes it bilinearly
  to `image_size` and maps it to [-1, 1] (see `center_crop_resize`).
  Animal-MNIST is first padded from 28x28 to 32x32 with background, and
  grayscale and RGBA images are made RGB. With a `seed` the order of the
  examples, and of the flips, is the same on every run.

  Args:
    dataset: "animal_mnist", a TFDS name, or "folder:/path" (one sub-folder
      per class, sorted names give labels 0..K-1).
    image_size: side of the square output images in pixels.
    batch_size: examples per batch of this input pipeline, i.e. the
      per-replica batch (`input_context.get_per_replica_batch_size`).
    data_dir: TFDS data directory; None takes TFDS' default.
    split: split to read.
    shuffle: shuffle the examples (and the TFDS files).
    repeat: repeat the data indefinitely.
    random_flip: flip images left-right at random (the official code does not).
    shuffle_buffer: examples in the TFDS shuffle buffer; Animal-MNIST and
      folders shuffle their whole (small) lists of arrays or paths.
    seed: seed of the shuffles and flips; None for a different order per run.
    input_context: a `tf.distribute.InputContext`; with several input
      pipelines each reads the 1/n-th share given by `input_pipeline_id`.
    drop_remainder: drop a last partial batch, for static batch shapes.
    conditional: keep the labels; False gives all-zero labels and lets a
      folder with a single class sub-folder through.
    skip_bad_images: leave out the images of a folder that cannot be
      decoded instead of raising DataError (see `folder.check_images`).

  Returns:
    A `tf.data.Dataset` of `(images, labels)`: float32 images of shape
    `(batch_size, image_size, image_size, 3)` in [-1, 1] and int32 labels of
    shape `(batch_size,)`, zeros for data sets without labels.

  Raises:
    DataError: if the data set is unknown, not prepared or badly laid out, a
      conditional folder has a single class, or one pass of a non-repeated
      data set cannot fill a batch that `drop_remainder` keeps.
    ValueError: if `image_size`, `batch_size` or `shuffle_buffer` is not positive.
  """
  _require_positive(image_size=image_size, batch_size=batch_size, shuffle_buffer=shuffle_buffer)
  ds, decode, num_examples = _source(dataset, data_dir, split, shuffle, seed, input_context,
                                     conditional, skip_bad_images)
  if not repeat and drop_remainder and num_examples is not None and num_examples < batch_size:
    raise DataError(f"data set {dataset} has {num_examples} examples per input pipeline, fewer than "
                    f"batch_size={batch_size}, so one pass gives no full batch; lower the batch size")
  if shuffle:
    # Arrays and paths shuffle whole; TFDS records (encoded images) use the buffer.
    in_memory = dataset == embedded.NAME or _is_folder(dataset)
    ds = ds.shuffle(max(1, num_examples if in_memory else shuffle_buffer), seed=seed,
                    reshuffle_each_iteration=True)
  ds = _preprocessed(ds.repeat() if repeat else ds, decode, image_size, random_flip, seed,
                     conditional)
  return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _require_positive(**values):
  for name, value in values.items():
    if value <= 0:
      raise ValueError(f"{name} must be positive, got {value}")


def _source(dataset, data_dir, split, shuffle, seed, input_context, conditional, skip_bad_images):
  """(records, decode function, examples per input pipeline or None) of `dataset`."""
  if dataset == embedded.NAME:
    _require_single_split(dataset, split)
    ds, decode, num_examples = _animal_mnist_source(input_context)
  elif _is_folder(dataset):
    _require_single_split(dataset, split)
    ds, decode, num_examples = _folder_source(dataset, conditional, input_context,
                                              skip_bad_images)
  else:
    ds, decode, num_examples = _tfds_source(dataset, data_dir, split, shuffle, seed, input_context)
  if num_examples is not None and input_context is not None:
    num_examples //= max(1, input_context.num_input_pipelines)
  return ds, decode, num_examples


def _preprocessed(ds, decode, image_size, random_flip, seed, conditional):
  """Records decoded, cropped, resized, maybe flipped, in [-1, 1], with int32 (or zero) labels."""
  def preprocess(record, label, flip_seed=None):
    image = preprocessing.center_crop_resize(decode(record), image_size)
    if flip_seed is not None:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    label = tf.cast(label, tf.int32) if conditional else tf.zeros([], tf.int32)
    return preprocessing.to_unit_range(image), label

  if not random_flip:
    return ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  # Stateless flips fed by a seeded stream stay deterministic in a parallel map.
  flip_seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
  return tf.data.Dataset.zip((ds, flip_seeds)).map(
      lambda example, flip_seed: preprocess(*example, flip_seed=flip_seed),
      num_parallel_calls=tf.data.AUTOTUNE)
