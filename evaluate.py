"""Evaluates a generator: FID, Inception Score, KID, precision/recall, class consistency, sheets.

  python evaluate.py --checkpoint=runs/default                  # newest checkpoint, 50,000 samples
  python evaluate.py --checkpoint=runs/default --checkpoint_step=20000 --metrics=fid,cls
  python evaluate.py --checkpoint=runs/default --checkpoint_step=best   # lowest FID in training
  python evaluate.py --saved_model=runs/default/saved_model --dataset=animal_mnist --num_samples=10000

Writes metrics.json and the sheets (samples.png, classes.png,
interpolation.png, attention.png) to --output_dir, by default
<model_dir>/eval/step_<N>/, prints a table of the metrics and reports
progress on stderr. Real-image statistics are cached in
$SAGAN_TF_CACHE/stats (default ~/.cache/sagan_tf/stats). The Inception
weights come from --inception_path, $SAGAN_TF_INCEPTION or the cache that
`python tools/fetch_inception.py` fills. Errors print one line and exit 2
(4 when a file cannot be written: disk full).
"""

import functools
import errno
import os

from absl import app
from absl import flags

from sagan_tf import console  # pylint: disable=g-bad-import-order

if __name__ == "__main__":
  # Before TensorFlow is imported: keeps its log lines off the console
  # ($SAGAN_TF_VERBOSE=1 or --verbosity=0 bring them back).
  console.setup()

METRIC_NAMES = ("fid", "is", "kid", "pr", "cls")
BEST = "best"

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Run directory written by train.py (evaluates its newest "
                    "checkpoint, or --checkpoint_step). Exactly one of --checkpoint and "
                    "--saved_model.")
flags.DEFINE_string("checkpoint_step", None, "Step of the checkpoint to evaluate in --checkpoint, "
                   "or 'best': the lowest-FID checkpoint of a run with train.eval_every "
                   "(checkpoints/best/).")
flags.DEFINE_string("saved_model", None, "Directory of a generator exported by train.py or "
                    "sagan_tf.export.export_generator.")
flags.DEFINE_string("dataset", None, "Real data set (animal_mnist, a TFDS name or folder:/path); "
                    "default: the run's training data set.")
flags.DEFINE_string("data_dir", None, "TFDS data directory; default: the run's.")
flags.DEFINE_string("split", "train", "Split of the real images (the official code used train).")
flags.DEFINE_integer("num_samples", 50000, "Generated images, and real images, per metric "
                     "(the paper: 50,000).")
flags.DEFINE_integer("batch_size", 100, "Images per generator and Inception batch.")
flags.DEFINE_string("metrics", "fid,is,kid,pr", "Comma list of fid, is (Inception Score, needs "
                    "the frozen-graph weights' logits), kid, pr (precision/recall, k=3), cls "
                    "(class consistency by a small classifier trained on the real images).")
flags.DEFINE_string("inception_path", None, "Inception weight file (inception-2015-12-05.pt or "
                    "classify_image_graph_def.pb) or its folder; default: $SAGAN_TF_INCEPTION, "
                    "then the cache of tools/fetch_inception.py.")
flags.DEFINE_integer("inception_standin", 0, "TEST ONLY: > 0 replaces Inception by a tiny random "
                     "network with this many features (2048 has Inception's shapes), so tests run "
                     "without the weights. Its numbers are not FID or IS.")
flags.DEFINE_integer("is_splits", 10, "Splits of the Inception Score (mean and std over them).")
flags.DEFINE_integer("kid_subsets", 100, "Random subsets of the KID estimate.")
flags.DEFINE_integer("kid_subset_size", 1000, "Images per KID subset (clipped to the sample count).")
flags.DEFINE_float("truncation", 0.0, "Truncation threshold t > 0: noise values beyond |t| are "
                   "resampled (BigGAN's trick); 0 turns it off.")
flags.DEFINE_bool("use_ema", True, "Evaluate the generator weight average when the run kept one.")
flags.DEFINE_string("output_dir", None, "Where metrics.json and the sheets go; default: "
                    "<model_dir>/eval/step_<N> (for --saved_model, next to its directory).")
flags.DEFINE_integer("seed", 0, "Seed of the noise, the labels and the sheets.")
flags.DEFINE_bool("sheets", True, "Write the PNG sheets.")
flags.DEFINE_string("attention_pixels", None, "Query pixels of the attention sheet as "
                    "'y,x;y,x' in image pixels, e.g. '8,8;16,24'; default: three spread pixels; "
                    "'' for no attention sheet.")
flags.DEFINE_integer("cls_train_examples", 10000, "Real images (10% held out) that train the "
                     "cls classifier; it is cached per data set and settings.")
flags.DEFINE_integer("cls_epochs", 3, "Epochs of the cls classifier.")
flags.DEFINE_bool("cache", True, "Read and write cached real statistics and classifiers.")


PROGRAM = "evaluate.py"


def _fail(message, status=2):
  console.fail(PROGRAM, message, status)


def parse_metrics(text):
  """The metric names of a comma list, in order, without repeats."""
  names = [name.strip().lower() for name in text.split(",") if name.strip()]
  unknown = [name for name in names if name not in METRIC_NAMES]
  if unknown:
    raise ValueError(f"unknown --metrics {unknown}; choose from {','.join(METRIC_NAMES)}")
  if not names:
    raise ValueError(f"--metrics is empty; choose from {','.join(METRIC_NAMES)}")
  return tuple(dict.fromkeys(names))


def parse_checkpoint_step(text):
  """None, "best" or a step number from --checkpoint_step's text."""
  if text is None or text == BEST:
    return text
  try:
    step = int(text)
  except ValueError:
    raise ValueError(f"--checkpoint_step={text!r} is neither a step number nor 'best'") from None
  if step < 0:
    raise ValueError(f"--checkpoint_step must be >= 0 or 'best', got {step}")
  return step


def parse_pixels(text):
  """[(y, x), ...] from 'y,x;y,x'; [] for an empty string."""
  pixels = []
  for item in filter(None, (part.strip() for part in text.split(";"))):
    parts = item.split(",")
    try:
      y, x = (int(p) for p in parts)
    except ValueError:
      raise ValueError(f"--attention_pixels: {item!r} is not 'y,x' with integer pixel "
                       "coordinates (e.g. '8,8;16,24')") from None
    pixels.append((y, x))
  return pixels


def _check_model_dir(values, model_dir, flag):
  if not os.path.isdir(model_dir):
    raise ValueError(f"{flag}={model_dir}: no such directory")
  if values.saved_model:
    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
      raise ValueError(f"--saved_model={model_dir}: no saved_model.pb, so not a SavedModel")
    return
  if not os.path.isfile(os.path.join(model_dir, "config.json")):
    raise ValueError(f"--checkpoint={model_dir}: config.json not found, so not a sagan_tf run "
                     "directory (train.py writes one)")
  checkpoints = os.path.join(model_dir, "checkpoints")
  steps = sorted(int(name[len("ckpt-"):-len(".index")]) for name in
                 (os.listdir(checkpoints) if os.path.isdir(checkpoints) else [])
                 if name.startswith("ckpt-") and name.endswith(".index")
                 and name[len("ckpt-"):-len(".index")].isdigit())
  if not steps:
    raise ValueError(f"--checkpoint={model_dir}: no checkpoint in {checkpoints}")
  step = values.checkpoint_step
  if step == BEST:
    # run_dir imports without TensorFlow; its checkpoint listing needs it (gfile).
    from sagan_tf.training import run_dir  # pylint: disable=g-import-not-at-top
    best = os.path.join(model_dir, run_dir.BEST_CHECKPOINT_DIR)
    if not any(name.endswith(".index") for name in
               (os.listdir(best) if os.path.isdir(best) else [])):
      raise ValueError(f"--checkpoint_step=best: no checkpoint in {best} (the run had no "
                       "train.eval_every, or no evaluation finished)")
  elif step is not None and step not in steps:
    raise ValueError(f"no checkpoint for --checkpoint_step={step} in {checkpoints}; "
                     f"steps there: {steps}")


def check_flags(values):
  """Checks the flags that need no TensorFlow, so a bad command line fails at once."""
  if bool(values.checkpoint) == bool(values.saved_model):
    raise ValueError("pass exactly one of --checkpoint=RUN_DIR and --saved_model=DIR")
  if values.checkpoint_step is not None and not values.checkpoint:
    raise ValueError("--checkpoint_step needs --checkpoint")
  values.checkpoint_step = parse_checkpoint_step(values.checkpoint_step)
  model_dir = values.checkpoint or values.saved_model
  flag = "--checkpoint" if values.checkpoint else "--saved_model"
  # Local paths are checked here, in a second instead of after TensorFlow loads;
  # remote file systems (gs://...) are checked when the model loads.
  if "://" not in model_dir:
    _check_model_dir(values, model_dir, flag)
  dataset = values.dataset or ""
  if dataset.startswith("folder:") and "://" not in dataset:
    root = os.path.expanduser(dataset[len("folder:"):])
    if not os.path.isdir(root):
      what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
      raise ValueError(f"--dataset={dataset}: image folder {root!r} {what}")
  if values.inception_standin < 0:
    raise ValueError(f"--inception_standin must be >= 0, got {values.inception_standin}")
  for name in ("num_samples", "batch_size", "is_splits", "kid_subsets", "cls_train_examples",
               "cls_epochs"):
    if getattr(values, name) <= 0:
      raise ValueError(f"--{name} must be positive, got {getattr(values, name)}")
  if not 0 <= values.seed < 2**32:
    raise ValueError(f"--seed must be in [0, {2**32 - 1}], got {values.seed}")
  if values.kid_subset_size < 2:
    raise ValueError(f"--kid_subset_size must be >= 2, got {values.kid_subset_size}")
  if not values.truncation >= 0.0 or values.truncation == float("inf"):
    raise ValueError(f"--truncation must be a finite number >= 0 (0 = off), got {values.truncation}")
  if 0.0 < values.truncation < 0.05:
    raise ValueError(f"--truncation={values.truncation} is too small to sample from; use t >= 0.05 "
                     "or 0 for none")
  metrics = parse_metrics(values.metrics)
  if "is" in metrics and values.is_splits > values.num_samples:
    raise ValueError(f"--is_splits={values.is_splits} exceeds --num_samples={values.num_samples}")
  if ("kid" in metrics or "pr" in metrics) and values.num_samples < 4:
    raise ValueError("--num_samples must be at least 4 for kid and pr")
  pixels = None if values.attention_pixels is None else parse_pixels(values.attention_pixels)
  return metrics, pixels


def main(argv):
  console.refuse_arguments(PROGRAM, argv)
  try:
    metrics, pixels = check_flags(FLAGS)
  except ValueError as error:
    _fail(error)
  # pylint: disable=g-import-not-at-top
  from sagan_tf import data
  from sagan_tf import evaluation
  from sagan_tf import export
  from sagan_tf.training import run_dir
  options = evaluation.EvaluationOptions(
      checkpoint=FLAGS.checkpoint, checkpoint_step=FLAGS.checkpoint_step,
      saved_model=FLAGS.saved_model, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
      split=FLAGS.split, num_samples=FLAGS.num_samples, batch_size=FLAGS.batch_size,
      metrics=metrics, metrics_explicit=FLAGS["metrics"].present, inception_path=FLAGS.inception_path,
      is_splits=FLAGS.is_splits,
      kid_subsets=FLAGS.kid_subsets, kid_subset_size=FLAGS.kid_subset_size,
      truncation=FLAGS.truncation, use_ema=FLAGS.use_ema, output_dir=FLAGS.output_dir,
      seed=FLAGS.seed, sheets=FLAGS.sheets, attention_pixels=pixels,
      cls_train_examples=FLAGS.cls_train_examples, cls_epochs=FLAGS.cls_epochs,
      use_cache=FLAGS.cache)
  feature_network = None
  if FLAGS.inception_standin:
    # The test-only network lives in tests/, next to this file; the library never imports it.
    from tests import standin_inception
    feature_network = functools.partial(standin_inception.load_standin, FLAGS.inception_standin)
  from sagan_tf import storage
  try:
    report = evaluation.run_evaluation(options, feature_network=feature_network)
  except (evaluation.EvaluationError, run_dir.RunDirError, export.ExportError,
          data.DataError) as error:
    _fail(error)
  except storage.WriteError as error:
    _fail(error, storage.EXIT_WRITE_FAILED)
  except OSError as error:
    # An unwritable --output_dir or cache, a file that vanished: name the file.
    where = f"{error.filename}: " if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
      directory = os.path.dirname(str(error.filename or "")) or "."
      _fail(f"cannot write {where}{error.strerror} ({storage.free_space(directory)})",
            storage.EXIT_WRITE_FAILED)
    _fail(f"{where}{error.strerror or error}")
  print(evaluation.format_table(report["metrics"]))
  if report["config"]["inception"] and report["config"]["inception"]["source"] == "standin":
    print("(computed with the TEST ONLY stand-in network: not FID/IS numbers)")
  print(f"wrote {os.path.join(report['output_dir'], evaluation.METRICS_FILE)}"
        + (f" and {len(report['sheets'])} sheets" if report["sheets"] else ""))


if __name__ == "__main__":
  app.run(main, flags_parser=console.flags_parser(PROGRAM))
