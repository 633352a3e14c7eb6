"""The console scripts `sagan-train` and `sagan-evaluate` of `pip install`.

train.py and evaluate.py at the top of the repository are the programs;
`train.py` and `evaluate.py` here are symbolic links to them, so that an
installed package carries them. Each console script runs its program as
`__main__`, exactly as `python train.py` does: same flags, help, output and
exit statuses.
"""

import runpy


def _run(name):
  runpy.run_module(f"{__name__}.{name}", run_name="__main__", alter_sys=True)


def train():
  """`sagan-train`: `python train.py`."""
  _run("train")


def evaluate():
  """`sagan-evaluate`: `python evaluate.py`."""
  _run("evaluate")
