"""SIGTERM and SIGINT (preemption, Ctrl-C): recorded at start-up, a clean stop while training.

A first signal during start-up is only recorded (there is nothing to save
yet); once training runs, `StopRequest` ends it after the step or chunk in
flight with a checkpoint. A second signal exits at once, without saving.
"""

import os
import signal
import socket
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StartupSignals:
  """Records SIGTERM/SIGINT during start-up, when there is nothing to save yet.

  The Trainer takes over once training starts and stops at once on a signal
  recorded here. A second signal exits immediately.
  """

  def __init__(self):
    self.signal = None

  def install(self):
    for sig in STOP_SIGNALS:
      signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signal = signal.Signals(signum).name


def ignore_stop_signals():
  """Lets a SIGTERM or SIGINT during TensorFlow's shutdown pass: the work is saved, exit 0."""
  for sig in STOP_SIGNALS:
    signal.signal(sig, signal.SIG_IGN)


class StopRequest:
  """Turns SIGTERM and SIGINT (preemption, Ctrl-C) into a stop flag.

  Python runs signal handlers only between bytecodes of the main thread, so a
  plain handler would wait for a compiled chunk of `steps_per_loop` steps to
  return. The C-level handler also writes the signal number to a wakeup file
  descriptor: a watcher thread reads it at once and sets `flag`, a boolean
  tf.Variable that the compiled loop reads before every iteration, so the
  chunk ends after the step in flight. A second signal exits at once, with
  status 128 + signal number, without saving.

  Args:
    flag: a boolean tf.Variable to set, or None.
    initial: an object whose `signal` attribute names a signal that arrived
      before this request took over (train.py's start-up handler), or None.
    log: callable taking one line.
  """

  def __init__(self, flag=None, initial=None, log=print):
    self.signal = None
    self.flag = flag
    self._initial = initial
    self._log = log
    self._count = 0
    self._lock = threading.Lock()
    self._previous = {}
    self._previous_wakeup_fd = None
    self._sockets = None
    self._watcher = None

  def __enter__(self):
    for sig in STOP_SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    if self._previous:
      reader, writer = socket.socketpair()
      writer.setblocking(False)
      try:
        self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._sockets = (reader, writer)
        self._watcher = threading.Thread(target=self._watch, name="stop-request", daemon=True)
        self._watcher.start()
      except ValueError:
        reader.close()
        writer.close()
    # Installed first, then read: a signal in between is seen by one of the two.
    if self._initial is not None and self._initial.signal is not None:
      self._received(getattr(signal, self._initial.signal), first_only=True)
    return self

  def _watch(self):
    reader = self._sockets[0]
    while True:
      data = reader.recv(64)
      for signum in data:
        if signum == 0:  # Written by __exit__.
          return
        if signum in STOP_SIGNALS:
          self._received(signum)
      if not data:
        return

  def _handle(self, signum, frame):
    del frame
    if self._watcher is None:
      self._received(signum)

  def _received(self, signum, first_only=False):
    with self._lock:
      self._count += 1
      if self._count > 1 and not first_only:
        self._log(f"second {signal.Signals(signum).name}: exiting at once without saving "
                  "(the last checkpoint is kept)")
        os._exit(128 + signum)  # pylint: disable=protected-access
      if self.signal is None:
        self.signal = signal.Signals(signum).name
      if self.flag is not None:
        self.flag.assign(True)

  def __exit__(self, *args):
    if self._sockets is not None:
      signal.set_wakeup_fd(self._previous_wakeup_fd)
      self._sockets[1].setblocking(True)
      self._sockets[1].send(b"\0")
      self._watcher.join(timeout=5)
      for sock in self._sockets:
        sock.close()
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
