"""Shared fixtures: the public measurement data beside the repository (../shared/data), and a live
process that is not the test's own."""

import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public measurement data not found at {SHARED_DATA} (it sits beside the repository in CI)")
    return SHARED_DATA


@pytest.fixture
def other_process():
    """A live process of this host that is not this one: e.g. the holder of a run's lease in the way."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()
