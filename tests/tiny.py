"""A tiny trained model shared by the attack-evaluation tests (AutoAttack, audit, PAG score)."""

import torch
import torch.nn.functional as F

from pagdemo.data.datasets import load_dataset
from pagdemo.models import PAGClassifier


def train_tiny(seed: int = 0) -> PAGClassifier:
    """A tinycnn that classifies the synthetic test images well but is not robust: seconds to train."""
    torch.manual_seed(seed)
    ds = load_dataset("synthetic", "train", synthetic_size=600, seed=seed)
    model = PAGClassifier("tinycnn", 10, ds.classes)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = ds.inputs(), ds.labels
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    return model.eval()
