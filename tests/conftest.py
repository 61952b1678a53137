"""Shared test set-up: CPU only, seeded, quiet, few threads (CI has 2 cores)."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)  # measured: 2 threads made a PAG step 5-10x slower on the 2-core CI machine


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
