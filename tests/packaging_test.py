"""pyproject.toml: the package installs, and its console scripts are train.py and evaluate.py."""

import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv

import pytest

import sagan_tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"sagan-train": "train.py", "sagan-evaluate": "evaluate.py"}
# What the package is built from.
SOURCES = ("pyproject.toml", "README.md", "train.py", "evaluate.py", "sagan_tf")


def pyproject():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def help_text(command, cwd):
  """--help output with absl's header line of the main module's path made neutral."""
  result = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
  text = re.sub(r"(?m)^\S*(train|evaluate)\.py:$", r"\1.py:", result.stdout)
  return result.returncode, text, result.stderr


def test_console_scripts_name_callables():
  scripts = pyproject()["scripts"]
  assert set(scripts) == set(SCRIPTS)
  for target in scripts.values():
    module, _, attribute = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


def test_the_cli_package_carries_the_programs_themselves():
  for program in SCRIPTS.values():
    carried = os.path.join(REPO, "sagan_tf", "cli", program)
    assert os.path.samefile(carried, os.path.join(REPO, program)), carried


def test_pinned_requirements_are_within_the_declared_ranges():
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  from packaging.utils import canonicalize_name  # pylint: disable=g-import-not-at-top
  def ranges(texts):
    return {canonicalize_name(Requirement(text).name): Requirement(text).specifier
            for text in texts}
  declared = ranges(pyproject()["dependencies"])
  test_tools = ranges(pyproject()["optional-dependencies"]["test"])
  with open(os.path.join(REPO, "requirements.txt")) as f:
    pins = dict(line.split("==") for line in (raw.split("#")[0].strip() for raw in f) if line)
  pins = {canonicalize_name(name): version for name, version in pins.items()}
  # requirements.txt pins the library's dependencies and the test tools (the "test" extra).
  assert set(declared) == set(pins) - set(test_tools)
  assert set(test_tools) <= set(pins)
  declared.update(test_tools)
  for name, specifier in declared.items():
    assert specifier.contains(pins[name]), (name, str(specifier), pins[name])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """bin/ of a fresh virtual environment with `pip install .` of a copy of the sources done.

  The environment sees this one's packages through a .pth file (no
  download): pip installs sagan_tf alone, without build isolation.
  """
  pytest.importorskip("setuptools", minversion="64")
  root = tmp_path_factory.mktemp("package")
  source = root / "source"
  for name in SOURCES:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, source / name, symlinks=True,
                      ignore=shutil.ignore_patterns("__pycache__"))
    else:
      os.makedirs(source, exist_ok=True)
      shutil.copy(path, source / name)
  env_dir = root / "venv"
  venv.create(env_dir, with_pip=True)
  python = env_dir / "bin" / "python"
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(site, "outer_environment.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  result = subprocess.run(
      [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
       str(source)], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  shutil.rmtree(source)  # the installed package must not need its sources
  return env_dir / "bin"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_installed_console_script_help_equals_the_program(installed, tmp_path, script):
  status, text, _ = help_text([str(installed / script)], cwd=tmp_path)
  expected_status, expected, _ = help_text([sys.executable, os.path.join(REPO, SCRIPTS[script])],
                                           cwd=tmp_path)
  assert "--model_dir" in text or "--checkpoint" in text
  assert (status, text) == (expected_status, expected)


@pytest.mark.slow
def test_installed_package_metadata(installed, tmp_path):
  code = ("import importlib.metadata as m, sagan_tf, sagan_tf.cli; "
          "print(m.version('sagan_tf'), sagan_tf.__file__)")
  result = subprocess.run([installed / "python", "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
  version, location = result.stdout.split()
  assert version == sagan_tf.__version__
  assert not location.startswith(REPO)


@pytest.mark.slow
def test_installed_console_script_reports_usage_errors_like_the_program(installed, tmp_path):
  result = subprocess.run([installed / "sagan-train", "--train_steps=oops"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
  assert result.returncode == 2
  assert result.stderr.startswith("train.py: error: ") and "--train_steps" in result.stderr
