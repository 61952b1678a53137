"""Shared test set-up: CPU only, seeded, quiet, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from pictures import one_image, tiny_models

torch.set_num_threads(1)  # measured: 2 threads made a PAG step 5-10x slower on the 2-core CI machine


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def models():
    """Two untrained tinycnns (tests/pictures.py), what the grid and compare tests draw with; a module may
    define its own `models`."""
    return tiny_models()


@pytest.fixture
def x():
    """The fixed test image of tests/pictures.py."""
    return one_image()
