"""ruff and mypy stay clean on the library (DESIGN.md), checked where CI runs the tests."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is a dev extra")
def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", "ssl_hub", "tests", "benchmarks", "conversion", "model_cards")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatting = run("ruff", "format", "--check", "ssl_hub", "tests", "benchmarks", "conversion", "model_cards")
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is a dev extra")
def test_mypy() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
