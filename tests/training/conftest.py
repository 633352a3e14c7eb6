"""Fixtures the tests of evaluation during training share."""

import pytest


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
  """An empty cache (no Inception weights, no real statistics) for the test."""
  directory = tmp_path / "cache"
  directory.mkdir()
  monkeypatch.setenv("SAGAN_TF_CACHE", str(directory))
  monkeypatch.delenv("SAGAN_TF_INCEPTION", raising=False)
  return str(directory)
