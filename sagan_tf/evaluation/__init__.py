"""Evaluating a trained generator: sampling, Inception features, metrics, metrics.json, PNG sheets.

Modules: `sampling` (the generator, its noise and labels), `features` (the
Inception network, generated features), `real` (real images and their cached
statistics), `classifier` (the `cls` judge), `sheets` (the PNG sheets) and
`run` (the options, the metric dispatcher and metrics.json).
"""

from sagan_tf.evaluation.classifier import build_classifier
from sagan_tf.evaluation.classifier import load_or_train_classifier
from sagan_tf.evaluation.errors import EvaluationError
from sagan_tf.evaluation.features import find_inception_weights
from sagan_tf.evaluation.features import generated_outputs
from sagan_tf.evaluation.features import load_feature_network
from sagan_tf.evaluation.progress import Progress
from sagan_tf.evaluation.real import read_real
from sagan_tf.evaluation.real import real_statistics
from sagan_tf.evaluation.run import DEFAULT_METRICS
from sagan_tf.evaluation.run import EvaluationOptions
from sagan_tf.evaluation.run import INCEPTION_METRICS
from sagan_tf.evaluation.run import METRICS
from sagan_tf.evaluation.run import METRICS_FILE
from sagan_tf.evaluation.run import compute_metrics
from sagan_tf.evaluation.run import format_table
from sagan_tf.evaluation.run import run_evaluation
from sagan_tf.evaluation.sampling import Sampler
from sagan_tf.evaluation.sampling import balanced_labels
from sagan_tf.evaluation.sampling import load_sampler
from sagan_tf.evaluation.sampling import metric_inputs
from sagan_tf.evaluation.sampling import sample_noise
from sagan_tf.evaluation.sheets import SHEET_FILES
from sagan_tf.evaluation.sheets import attention_sheet
from sagan_tf.evaluation.sheets import default_attention_pixels
from sagan_tf.evaluation.sheets import write_sheets
