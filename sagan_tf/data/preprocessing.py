"""Image preprocessing shared by every data source, and the error all of them raise."""

import tensorflow as tf


class DataError(ValueError):
  """A data set that cannot be read: unknown, not prepared, badly laid out or corrupt.

  The message is one line that names the data set, file or folder and, where
  there is one, the command or setting that fixes it.
  """


def center_crop_resize(image, image_size):
  """Crops the largest centred square of `image` and resizes it bilinearly.

  This is the preprocessing of the official code's ImageNet records
  (openai/improved-gan `convert_imagenet_to_records.py`) and of the TF-GAN
  example, done in TensorFlow. The crop offsets are floor((h - s) / 2) and
  floor((w - s) / 2) for the square side s = min(h, w), the convention of
  `tf.image.resize_with_crop_or_pad`; improved-gan and TF-GAN round half up,
  so when h - s is odd our square sits one pixel higher (or further left).
  The resize is `tf.image.resize(..., "bilinear", antialias=False)`, which
  uses half-pixel centres and so returns a same-sized image unchanged.

  Args:
    image: a `(height, width, channels)` tensor, uint8 or float in [0, 255];
      height and width may be unknown until run time.
    image_size: side of the output square in pixels.

  Returns:
    A float32 `(image_size, image_size, channels)` tensor, still in [0, 255].

  Raises:
    ValueError: if `image_size` is not positive.
  """
  if image_size <= 0:
    raise ValueError(f"image_size must be positive, got {image_size}")
  image = tf.convert_to_tensor(image)
  height, width = image.shape[0], image.shape[1]
  if height == image_size and width == image_size:
    # Skips a resize that would return the image unchanged (CIFAR-10 at 32).
    return tf.cast(image, tf.float32)
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  top = (shape[0] - side) // 2
  left = (shape[1] - side) // 2
  square = image[top:top + side, left:left + side, :]
  resized = tf.image.resize(square, [image_size, image_size], method="bilinear", antialias=False)
  return tf.cast(resized, tf.float32)


def to_unit_range(image):
  """Maps pixel values from [0, 255] to [-1, 1] as x * (2 / 255) - 1, as the official code does.

  Args:
    image: a uint8 tensor, or a float tensor of values in [0, 255].

  Returns:
    A float32 tensor of the same shape with values in [-1, 1].
  """
  return tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0


def to_rgb(image):
  """Gives a `(height, width, channels)` image three channels.

  Grayscale is repeated over the channels; an alpha channel is dropped.

  Args:
    image: an image tensor whose channel count is known when tracing.

  Returns:
    The image with three channels, of the same dtype.

  Raises:
    ValueError: if the channel count is unknown or not 1, 2, 3 or 4.
  """
  channels = image.shape[-1]
  if channels == 3:
    return image
  if channels in (1, 2):
    return tf.image.grayscale_to_rgb(image[..., :1])
  if channels == 4:
    return image[..., :3]
  raise ValueError(f"cannot make an RGB image from {channels} channels (shape {image.shape})")
