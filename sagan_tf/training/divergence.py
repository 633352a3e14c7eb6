"""What a NaN or Inf loss or weight does: stop, or roll back to the newest checkpoint and reseed."""

import hashlib

from sagan_tf.training.errors import DivergenceError

ON_NAN_POLICIES = ("stop", "rollback")


class RollbackPolicy:
  """Decides, at each divergence, whether the run may roll back, and reseeds the noise when it does.

  Args:
    on_nan: "stop" raises DivergenceError at a NaN or Inf loss or weight;
      "rollback" allows rolling back to the newest checkpoint, at most
      `max_rollbacks` times in this process.
    max_rollbacks: the cap of "rollback".
    seed: the run's seed, from which the new noise seeds derive.
  """

  def __init__(self, on_nan, max_rollbacks, seed):
    if on_nan not in ON_NAN_POLICIES:
      raise ValueError(f"on_nan must be one of {ON_NAN_POLICIES}, got {on_nan!r}")
    if max_rollbacks < 0:
      raise ValueError(f"max_rollbacks must be >= 0, got {max_rollbacks}")
    self.on_nan = on_nan
    self.max_rollbacks = max_rollbacks
    self.seed = seed
    self.rollbacks = 0

  def allow_rollback(self, what, latest):
    """Counts a rollback to checkpoint `latest`, or raises DivergenceError when none is allowed."""
    if self.on_nan != "rollback":
      raise DivergenceError(
          f"{what}; the last good checkpoint is {latest}; lower the learning rates or resume "
          "from it (--on_nan=rollback retries from it automatically)")
    if latest is None:
      raise DivergenceError(f"{what}; no checkpoint to roll back to")
    if self.rollbacks >= self.max_rollbacks:
      raise DivergenceError(
          f"{what}, after {self.rollbacks} rollback(s) (the cap, --max_rollbacks); the last good "
          f"checkpoint is {latest}; lower the learning rates or resume from it")
    self.rollbacks += 1

  def reseed(self, rng, step):
    """Reseeds `rng` after a rollback to `step`, or the restored state would diverge the same way."""
    text = f"{self.seed}:{step}:{self.rollbacks}"
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")
    rng.reset_from_seed(seed)
    return seed
