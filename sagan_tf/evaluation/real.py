"""Real images: reading them in a seeded order, and their Inception statistics, cached on disk."""

import os
import sys

import numpy as np

from sagan_tf import cache
from sagan_tf import data
from sagan_tf import samples
from sagan_tf.evaluation.errors import EvaluationError
from sagan_tf.evaluation.progress import Progress


def real_batches(dataset, *, image_size, num, batch_size, data_dir, split, conditional, seed=0):
  """Yields (uint8 images, labels) batches of up to `num` real examples in a seeded random order."""
  ds = data.make_dataset(dataset, image_size=image_size, batch_size=batch_size, data_dir=data_dir,
                         split=split, shuffle=True, repeat=False, seed=seed, drop_remainder=False,
                         conditional=conditional)
  count = 0
  for images, labels in ds:
    take = min(num - count, int(images.shape[0]))
    yield samples.to_uint8(images[:take].numpy()), labels[:take].numpy()
    count += take
    if count >= num:
      return


def read_real(dataset, *, image_size, num, batch_size, data_dir, split, conditional, seed=0):
  """(uint8 images, int32 labels) of up to `num` real examples in a seeded random order."""
  batches = list(real_batches(dataset, image_size=image_size, num=num, batch_size=batch_size,
                              data_dir=data_dir, split=split, conditional=conditional, seed=seed))
  if not batches:
    raise EvaluationError(f"data set {dataset} (split {split}) yielded no images")
  images, labels = zip(*batches)
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _load_cached(stats_path, features_path, need_features):
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  mu, sigma, meta = metrics.load_statistics(stats_path)
  result = {"mu": mu, "sigma": sigma, "num_images": int(meta.get("num_images", 0)),
            "cached": True, "path": stats_path}
  if need_features:
    result["pool_3"] = np.load(features_path)
  return result


def _real_features(dataset, *, image_size, num_samples, batch_size, inception, data_dir, split, log):
  """float32 pool_3 features of up to `num_samples` real images (at least 2)."""
  meter = Progress(f"real images ({dataset})", num_samples)
  features = []
  for images, _ in real_batches(dataset, image_size=image_size, num=num_samples,
                                batch_size=batch_size, data_dir=data_dir, split=split,
                                conditional=False):
    features.append(inception(images.astype(np.float32))["pool_3"])
    meter.update(len(images))
  count = sum(len(part) for part in features)
  if count < 2:
    raise EvaluationError(f"data set {dataset} (split {split}) has {count} images; FID needs >= 2")
  if count < num_samples:
    log(f"warning: {dataset} (split {split}) has only {count} images, fewer than "
        f"--num_samples={num_samples}; the real side uses all {count}")
  return np.concatenate(features).astype(np.float32)


def _save_cached(stats_path, features_path, mu, sigma, pool, **meta):
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(stats_path), exist_ok=True)
  # Temporary names plus renames: a killed run never leaves half a cache entry.
  tmp = stats_path + ".tmp.npz"
  metrics.save_statistics(tmp, mu, sigma, num_images=len(pool), **meta)
  os.replace(tmp, stats_path)
  tmp = features_path + ".tmp.npy"
  np.save(tmp, pool)
  os.replace(tmp, features_path)


def real_statistics(dataset, *, image_size, num_samples, batch_size, inception, inception_info,
                    data_dir=None, split="train", need_features=False, use_cache=True, log=None):
  """Inception statistics of real images, cached per data set, split, size, count and network.

  The cache lives in `<cache.cache_root()>/stats/`: `<key>.npz` (mu, sigma and a
  description) and `<key>_features.npy` (the float32 pool_3 features, 8 KB
  per image, which KID and precision/recall need). The key does not see
  changes to the files of a folder data set: delete the cache after editing one.

  Returns:
    A dict with "mu", "sigma", "num_images", "cached" (bool), "path" and,
    when `need_features`, "pool_3".
  """
  from sagan_tf import metrics  # pylint: disable=g-import-not-at-top
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  key = cache.cache_key(dataset, split, f"{image_size}px", f"{num_samples}", data_dir,
                        inception_info["sha1"])
  directory = cache.cache_dir(cache.STATS_DIR)
  stats_path = os.path.join(directory, key + ".npz")
  features_path = os.path.join(directory, key + "_features.npy")
  if use_cache and os.path.isfile(stats_path) and (not need_features or os.path.isfile(features_path)):
    result = _load_cached(stats_path, features_path, need_features)
    log(f"real statistics: cached {stats_path}")
    return result
  pool = _real_features(dataset, image_size=image_size, num_samples=num_samples,
                        batch_size=batch_size, inception=inception, data_dir=data_dir, split=split,
                        log=log)
  mu, sigma = metrics.compute_statistics(pool)
  result = {"mu": mu, "sigma": sigma, "num_images": len(pool), "cached": False, "path": stats_path}
  if need_features:
    result["pool_3"] = pool
  if use_cache:
    _save_cached(stats_path, features_path, mu, sigma, pool, dataset=dataset, split=split,
                 image_size=image_size, inception_sha1=inception_info["sha1"])
    log(f"real statistics: cached to {stats_path}")
  return result
