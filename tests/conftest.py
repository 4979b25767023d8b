"""Shared fixtures: the public measurement data beside the repository (../shared/data)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public measurement data not found at {SHARED_DATA} (it sits beside the repository in CI)")
    return SHARED_DATA
