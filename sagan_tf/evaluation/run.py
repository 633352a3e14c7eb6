"""The whole evaluation: options, the metric dispatcher, metrics.json and the metric table."""

import dataclasses
import json
import math
import os
import sys
import time
import typing

import numpy as np

import sagan_tf
from sagan_tf import data, storage
from sagan_tf.evaluation import classifier as classifier_lib
from sagan_tf.evaluation import features as features_lib
from sagan_tf.evaluation import real as real_lib
from sagan_tf.evaluation import sampling
from sagan_tf.evaluation import sheets as sheets_lib
from sagan_tf.evaluation.errors import EvaluationError

METRICS = ("fid", "is", "kid", "pr", "cls")
DEFAULT_METRICS = ("fid", "is", "kid", "pr")
INCEPTION_METRICS = ("fid", "is", "kid", "pr")
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class EvaluationOptions:
  """What `run_evaluation` does; evaluate.py fills it from its flags (see there)."""
  checkpoint: typing.Optional[str] = None
  checkpoint_step: typing.Optional[typing.Union[int, str]] = None  # a step, or "best"
  saved_model: typing.Optional[str] = None
  dataset: typing.Optional[str] = None
  data_dir: typing.Optional[str] = None
  split: str = "train"
  num_samples: int = 50000
  batch_size: int = 100
  metrics: typing.Tuple[str, ...] = DEFAULT_METRICS
  metrics_explicit: bool = False
  inception_path: typing.Optional[str] = None
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


def _check_request(options, metrics, sampler, info):
  """(dataset, data_dir) of the real images; EvaluationError for what this generator cannot do."""
  dataset = options.dataset or info["dataset"]
  data_dir = options.data_dir if options.data_dir is not None else info["data_dir"]
  if any(m in metrics for m in INCEPTION_METRICS + ("cls",)) and not dataset:
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
  return dataset, data_dir


def _feature_network(options, metrics, load_network, log):
  """(network, description) for the Inception metrics, dropping IS (in place) without logits."""
  if not any(m in metrics for m in INCEPTION_METRICS):
    return None, None
  inception, inception_info = load_network()
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
  return inception, inception_info


def _config(options, metrics, info, sampler, real, inception_info, classifier_info, dataset,
            data_dir):
  """The "config" entry of metrics.json: what was evaluated, on what, with which settings."""
  return {
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
  }


def _write_json(path, report):
  with storage.writing(os.path.basename(path), os.path.dirname(path),
                       lambda: storage.remove_quietly(path + ".tmp")):
    with open(path + ".tmp", "w") as f:
      json.dump(report, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _check_finite(results):
  bad = [name for name, value in results.items() if not math.isfinite(value)]
  if bad:
    raise EvaluationError(f"non-finite metric values for {bad}; see the log above")


def _measure(options, metrics, sampler, dataset, data_dir, inception, inception_info, log):
  """(results, real statistics, classifier info): the metrics of `options.num_samples` samples."""
  classifier, classifier_info = None, None
  if "cls" in metrics:
    classifier, classifier_info = classifier_lib.load_or_train_classifier(
        dataset, image_size=sampler.image_size, num_classes=sampler.num_classes, data_dir=data_dir,
        split=options.split, train_examples=options.cls_train_examples, epochs=options.cls_epochs,
        seed=options.seed, use_cache=options.use_cache, log=log)
  if any(m in metrics for m in ("fid", "kid", "pr")):
    # The real images are read after the generated ones: check that they
    # exist (and decode, for a folder) before the expensive generation.
    data.get_dataset_info(dataset, data_dir, options.split)
  z, labels = sampling.metric_inputs(options.seed, options.num_samples, sampler.z_dim,
                                     sampler.num_classes, options.truncation)
  fake = features_lib.generated_outputs(sampler, z, labels, batch_size=options.batch_size,
                                        inception=inception, classifier=classifier,
                                        need_logits="is" in metrics)
  real = None
  if any(m in metrics for m in ("fid", "kid", "pr")):
    real = real_lib.real_statistics(
        dataset, image_size=sampler.image_size, num_samples=options.num_samples,
        batch_size=options.batch_size, inception=inception, inception_info=inception_info,
        data_dir=data_dir, split=options.split, need_features="kid" in metrics or "pr" in metrics,
        use_cache=options.use_cache, log=log)
  results = compute_metrics(metrics, fake=fake, real=real, labels=labels,
                            classifier_info=classifier_info, is_splits=options.is_splits,
                            kid_subsets=options.kid_subsets, kid_subset_size=options.kid_subset_size,
                            pr_k=options.pr_k, seed=options.seed)
  _check_finite(results)
  return results, real, classifier_info


def run_evaluation(options, log=None, feature_network=None):
  """Loads the generator, computes the metrics, writes metrics.json and the sheets.

  Args:
    options: an `EvaluationOptions`.
    log: callable taking one line of progress text; stderr by default.
    feature_network: a callable returning (network, description) to use instead
      of the Inception network (evaluate.py's test-only --inception_standin).

  Returns:
    The dict written to metrics.json: {"metrics": {...}, "config": {...},
    "sheets": {...}, "output_dir": str, "elapsed_seconds": float}.

  Raises:
    EvaluationError, run_dir.RunDirError, export.ExportError,
    data.DataError: one-line messages for the command line.
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  started = time.monotonic()
  metrics = list(options.metrics)
  if any(m in metrics for m in INCEPTION_METRICS) and feature_network is None:
    # Missing weights fail before a large generator is restored.
    features_lib.find_inception_weights(options.inception_path)
  sampler, info = sampling.load_sampler(
      checkpoint=options.checkpoint, checkpoint_step=options.checkpoint_step,
      saved_model=options.saved_model, use_ema=options.use_ema)
  dataset, data_dir = _check_request(options, metrics, sampler, info)
  output_dir = options.output_dir or os.path.join(info["model_dir"], "eval", f"step_{info['step']}")
  os.makedirs(output_dir, exist_ok=True)
  inception, inception_info = _feature_network(
      options, metrics, feature_network or
      (lambda: features_lib.load_feature_network(options.inception_path)), log)
  results, real, classifier_info = _measure(options, metrics, sampler, dataset, data_dir,
                                            inception, inception_info, log)
  sheets = {}
  if options.sheets:
    sheets = sheets_lib.write_sheets(sampler, output_dir, seed=options.seed,
                                     truncation=options.truncation, class_names=info["class_names"],
                                     attention_pixels=options.attention_pixels)
  report = {"metrics": results,
            "config": _config(options, metrics, info, sampler, real, inception_info,
                              classifier_info, dataset, data_dir),
            "sheets": sheets, "output_dir": os.path.abspath(output_dir),
            "elapsed_seconds": round(time.monotonic() - started, 2)}
  _write_json(os.path.join(output_dir, METRICS_FILE), report)
  return report
