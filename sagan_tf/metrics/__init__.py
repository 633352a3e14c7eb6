"""Sample-quality metrics (FID, IS, KID, precision/recall) on the 2015-12-05 Inception network."""

from sagan_tf.metrics.fid import compute_statistics
from sagan_tf.metrics.fid import fid_from_features
from sagan_tf.metrics.fid import frechet_distance
from sagan_tf.metrics.fid import load_statistics
from sagan_tf.metrics.fid import save_statistics
from sagan_tf.metrics.inception import InceptionNetwork
from sagan_tf.metrics.inception import InceptionWeightsNotFoundError
from sagan_tf.metrics.inception import find_inception_weights
from sagan_tf.metrics.inception import load_inception
from sagan_tf.metrics.inception import resize_and_normalize
from sagan_tf.metrics.inception_score import inception_score
from sagan_tf.metrics.kid import kernel_inception_distance
from sagan_tf.metrics.precision_recall import precision_recall
