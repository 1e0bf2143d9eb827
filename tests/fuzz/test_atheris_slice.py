"""A short coverage-guided slice of every fuzz target, as CI runs it (README.md says how to run longer)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

SLICE_S = 5
ROOT = Path(__file__).parents[2]


NO_ATHERIS = importlib.util.find_spec("atheris") is None


@pytest.mark.skipif(NO_ATHERIS, reason="atheris is not installed (pip install -e '.[test]')")
@pytest.mark.timeout(SLICE_S * 6 + 30)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_slice_finds_nothing(name: str, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "tests.fuzz", name, "--seconds", str(SLICE_S),
                          "--artifacts", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=False)
    findings = sorted(p.name for p in tmp_path.iterdir())
    assert run.returncode == 0 and not findings, f"{findings}\n{run.stderr[-3000:]}"
    assert "Done" in run.stderr  # the fuzzer ran to its time limit, it did not fail to start
