"""A throttled progress line on stderr for the long loops of an evaluation."""

import math
import sys
import time


class Progress:
  """A throttled "done/total, images/s, ETA" line on stderr.

  Args:
    label: what is being counted.
    total: the count at the end.
    stream: where to write; stderr by default.
    interval: seconds between lines (a terminal gets one rewritten line).
  """

  def __init__(self, label, total, stream=None, interval=2.0):
    self.label = label
    self.total = int(total)
    self.stream = stream or sys.stderr
    self.interval = interval
    self.done = 0
    self.start = time.monotonic()
    self._last = -math.inf
    self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

  def update(self, count):
    self.done += int(count)
    now = time.monotonic()
    if self.done < self.total and now - self._last < self.interval:
      return
    self._last = now
    elapsed = max(now - self.start, 1e-9)
    rate = self.done / elapsed
    eta = (self.total - self.done) / rate if rate > 0 else 0.0
    line = (f"{self.label}: {self.done}/{self.total} images, {rate:.1f} images/s, "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
    end = "\n" if self.done >= self.total or not self._tty else ""
    print(("\r" if self._tty else "") + line, end=end, file=self.stream, flush=True)
