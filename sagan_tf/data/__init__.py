"""Input pipelines of real images: Animal-MNIST, TFDS data sets and class folders."""

from sagan_tf.data.datasets import DatasetInfo, get_dataset_info, make_dataset
from sagan_tf.data.embedded import load_animal_mnist
from sagan_tf.data.preprocessing import DataError, center_crop_resize, to_unit_range
