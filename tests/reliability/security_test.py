"""No code runs from data files: pickles only through restricted unpicklers, no eval or exec.

A static scan of the package and the programs (train.py, evaluate.py,
tools/, bench/) by their syntax trees, so that comments, strings and
methods named eval (Keras, torch) do not count.
"""

import ast
import os

import pytest

from tests.reliability import REPO

SCANNED = ["sagan_tf", "tools", "bench", "train.py", "evaluate.py"]
# Calls that run code named by a file's bytes, or text as code.
UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
                ("cPickle", "load"), ("cPickle", "loads"), ("marshal", "loads"),
                ("marshal", "load"), ("shelve", "open"), ("torch", "load"), ("dill", "load"),
                ("dill", "loads"), ("joblib", "load")}
UNSAFE_BUILTINS = {"eval", "exec", "__import__"}


def python_files():
  for entry in SCANNED:
    path = os.path.join(REPO, entry)
    if os.path.isfile(path):
      yield path
    for root, _, files in os.walk(path):
      for name in sorted(files):
        if name.endswith(".py"):
          yield os.path.join(root, name)


def restricted_unpicklers(tree):
  """Names of classes deriving from pickle.Unpickler that override find_class."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ClassDef) and any(
        isinstance(base, ast.Attribute) and base.attr == "Unpickler" for base in node.bases):
      if any(isinstance(item, ast.FunctionDef) and item.name == "find_class" for item in node.body):
        names.add(node.name)
  return names


def unsafe_uses(path):
  """[(line, description)] of unsafe calls in one file."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  found = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    func = node.func
    if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
      found.append((node.lineno, f"{func.id}()"))
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
        func.value.id, func.attr) in UNSAFE_CALLS:
      found.append((node.lineno, f"{func.value.id}.{func.attr}()"))
    for keyword in node.keywords:
      if keyword.arg == "allow_pickle" and not (
          isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
        found.append((node.lineno, "allow_pickle other than False"))
  return found


def test_no_unsafe_deserialisation_or_eval():
  problems = []
  for path in python_files():
    problems += [f"{os.path.relpath(path, REPO)}:{line}: {what}" for line, what in unsafe_uses(path)]
  assert not problems, "\n".join(problems)


def test_every_unpickler_restricts_globals():
  # Pickles are read only by pickle.Unpickler subclasses whose find_class
  # allows a fixed list of globals; a bare subclass would allow everything.
  unpicklers = {}
  for path in python_files():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
    subclasses = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and any(
        isinstance(base, ast.Attribute) and base.attr == "Unpickler" for base in node.bases)}
    assert subclasses == restricted_unpicklers(tree), path
    if subclasses:
      unpicklers[os.path.relpath(path, REPO)] = sorted(subclasses)
  assert unpicklers == {
      os.path.join("sagan_tf", "data", "embedded.py"): ["NumpyArrayUnpickler"],
      os.path.join("sagan_tf", "metrics", "torchscript_weights.py"): ["_RestrictedUnpickler"]}


@pytest.mark.parametrize("source,expected", [
    ("import pickle\npickle.load(f)\n", ["pickle.load()"]),
    ("eval('1')\n", ["eval()"]),
    ("import numpy as np\nnp.load(p, allow_pickle=True)\n", ["allow_pickle other than False"]),
    ("model.eval()\nnp.load(p, allow_pickle=False)\n", []),
])
def test_the_scan_finds_what_it_looks_for(source, expected, tmp_path):
  path = tmp_path / "sample.py"
  path.write_text(source)
  assert [what for _, what in unsafe_uses(str(path))] == expected


def test_restricted_unpicklers_refuse_code(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top
  from sagan_tf.data import embedded  # pylint: disable=g-import-not-at-top

  class Boom:
    def __reduce__(self):
      return (os.system, ("echo pwned",))

  path = tmp_path / "evil.gz"
  with gzip.open(path, "wb") as f:
    pickle.dump(Boom(), f)
  with gzip.open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="refused global"):
    embedded.NumpyArrayUnpickler(f).load()
