"""Shared test fixtures.

The real Phoenix annotation files and the original release's state-dict layouts live in
``../shared`` beside the checkout (read-only, never committed). ``SLT_SHARED_DIR`` points
elsewhere; tests that need them skip with a message saying what is missing.
"""

import os
from pathlib import Path

import pytest
import torch

from tests.web_helpers import build_web_run

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("SLT_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder; skips the test when it is absent."""
    path = _shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared folder {path} is absent (set SLT_SHARED_DIR to its location)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir(shared_dir: Path) -> Path:
    """``shared/data``: real Phoenix-2014 / Phoenix-2014T annotation files."""
    path = shared_dir / "data"
    if not path.is_dir():
        pytest.skip(f"real annotation folder {path} is absent")
    return path


@pytest.fixture(scope="session")
def state_dict_layout_dir(shared_dir: Path) -> Path:
    """``shared/reference/original-state-dict``: key/shape/dtype tables of the published models."""
    path = shared_dir / "reference" / "original-state-dict"
    if not path.is_dir():
        pytest.skip(f"published state-dict layouts {path} are absent")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same seed; two threads match the CI machine."""
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def web_run(tmp_path_factory):
    """A tiny trained run (S2G + G2T), a clip and translate.py's JSON of it: the web tests'."""
    return build_web_run(tmp_path_factory.mktemp("web"))
