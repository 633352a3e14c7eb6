"""The README's command blocks, run as written.

Every ```bash and ```python block runs, in a scratch folder that looks like
the repository (its files linked) with a tiny `runs/default/` (a checkpoint
and an exported generator of the default run's shapes); a block preceded by
`<!-- not-tested: reason -->` is skipped with that reason.
"""

import os
import re
import subprocess
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import export
from sagan_tf.models.build import build_sagan
from sagan_tf.training import run_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
NOT_TESTED = re.compile(r"^<!--\s*not-tested:\s*(.+?)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
# The default run's shapes (animal_mnist preset), at the smallest width.
IMAGE_SIZE, NUM_CLASSES, Z_DIM = 32, 10, 128


def readme_blocks():
  """[(line number, language, code, skip reason or None)] of the README's bash and python blocks."""
  with open(README, encoding="utf-8") as f:
    lines = f.read().splitlines()
  blocks, index = [], 0
  while index < len(lines):
    match = FENCE.match(lines[index])
    if not match or not match.group(1):
      index += 1
      continue
    end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
    previous = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
    marker = NOT_TESTED.match(previous)
    blocks.append((index + 1, match.group(1), "\n".join(lines[index + 1:end]) + "\n",
                   marker.group(1) if marker else None))
    index = end + 1
  return blocks


BLOCKS = readme_blocks()


def test_every_block_is_bash_or_python_and_the_tested_ones_are_there():
  assert {language for _, language, _, _ in BLOCKS} == {"bash", "python"}
  tested = [code for _, _, code, skip in BLOCKS if skip is None]
  for needle in ("saved_model_cli run", "tf.saved_model.load", "--helpfull", "build_sagan",
                 "tf.train.list_variables"):
    assert any(needle in code for code in tested), needle


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A folder with the repository's files linked and a tiny runs/default/ of the default shapes."""
  root = tmp_path_factory.mktemp("readme")
  for name in os.listdir(REPO):
    if name not in ("runs", ".git", ".venv") and not name.startswith("."):
      os.symlink(os.path.join(REPO, name), root / name)
  model_dir = root / "runs" / "default"
  tf.keras.utils.set_random_seed(0)
  generator, discriminator = build_sagan(IMAGE_SIZE, NUM_CLASSES, width=8, z_dim=Z_DIM)
  checkpoint = run_dir.make_checkpoint(generator, discriminator,
                                       step=tf.Variable(1, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, str(model_dir / run_dir.CHECKPOINT_DIR), 1).save(
      checkpoint_number=1)
  export.export_generator(generator, str(model_dir / run_dir.SAVED_MODEL_DIR), step=1,
                          dataset="animal_mnist")
  return root


def _run(language, code, cwd):
  env = dict(os.environ)
  # `python`, `saved_model_cli`, ... are this environment's, as in an activated one.
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
  env.pop("PYTHONPATH", None)
  command = ["bash", "-e", "-c", code] if language == "bash" else [sys.executable, "-c", code]
  return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _is_help(code):
  commands = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
  return all(re.search(r"--help(full)?\b", line) for line in commands)


@pytest.mark.slow
@pytest.mark.parametrize("line, language, code, skip", BLOCKS,
                         ids=[f"line{line}-{language}" for line, language, _, _ in BLOCKS])
def test_readme_block_runs(workdir, line, language, code, skip):
  if skip is not None:
    pytest.skip(f"README line {line}: {skip}")
  shutil.rmtree(workdir / "out", ignore_errors=True)  # saved_model_cli does not overwrite
  result = _run(language, code, workdir)
  output = f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
  if _is_help(code):
    # absl exits 1 after printing the help.
    assert result.returncode in (0, 1) and "--model_dir" in result.stdout, output
  else:
    assert result.returncode == 0, output
  if "saved_model_cli run" in code:
    images = np.load(workdir / "out" / "images.npy")
    assert images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8


@pytest.mark.slow
def test_export_snippet_gives_the_shape_it_states(workdir):
  (code,) = [code for _, _, code, skip in BLOCKS if skip is None and "tf.saved_model.load" in code]
  stated = re.search(r"# \[(\d+), (\d+), (\d+), (\d+)\]", code).groups()
  result = _run("python", code + "print(tuple(images.shape), images.dtype.name)\n", workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split("\n")[-2] == f"({', '.join(stated)}) float32"
