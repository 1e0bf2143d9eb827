"""Shared test fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_temp_directory() -> Iterator[Path]:
    """Every mkdtemp of the run (ours, the daemons' and the simulators') lands in one folder, removed at the end."""
    scratch = Path(tempfile.mkdtemp(prefix="gw-tests-"))
    scratch.chmod(0o711)  # other users (a technician in the CLI tests) may pass through to their sockets
    saved_tempdir, saved_environment = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(scratch)
    os.environ["TMPDIR"] = str(scratch)
    yield scratch
    tempfile.tempdir = saved_tempdir
    if saved_environment is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_environment
    shutil.rmtree(scratch, ignore_errors=True)
