"""pagdemo.train.state: a run's full state travels in shards a GPU machine can send back; it resumes
exactly."""

import json

import torch

from pagdemo.models import PAGClassifier
from pagdemo.train.state import STATE_DIR, has_state, load_state, save_state

SHARD_LIMIT = 16 * 2**20  # a file that comes back from the GPU machine


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)


def test_a_resnet18_state_is_exact_and_fits_the_transfer_limits(tmp_path):
    model = PAGClassifier("resnet18", 10)
    opt = _sgd(model)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()  # momentum buffers exist now
    save_state(tmp_path, model, opt, epoch=3, step=42, elapsed=12.5)
    files = sorted((tmp_path / STATE_DIR).iterdir())
    sizes = {f.name: f.stat().st_size for f in files}
    assert all(s < SHARD_LIMIT for s in sizes.values()), sizes
    shards = [n for n in sizes if n.endswith(".safetensors")]
    assert (
        sum(sizes[n] for n in shards) > 2 * 44_000_000 and len(shards) <= 8
    )  # fp32 weights and momenta, 2 calls of 4
    restored, opt2 = PAGClassifier("resnet18", 10), None
    opt2 = _sgd(restored)
    assert load_state(tmp_path, restored, opt2) == (3, 42, 12.5) and has_state(tmp_path)
    for (k, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), k
    for p, q in zip(model.parameters(), restored.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])


def test_a_missing_shard_is_named(tmp_path):
    model = PAGClassifier("resnet18", 10)
    save_state(tmp_path, model, _sgd(model), 1, 1, 1.0)
    index = json.loads((tmp_path / STATE_DIR / "model.safetensors.index.json").read_text())
    lost = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / STATE_DIR / lost).unlink()
    try:
        load_state(tmp_path, PAGClassifier("resnet18", 10), _sgd(model))
    except ValueError as e:
        assert lost in str(e) and "every shard" in str(e)
    else:
        raise AssertionError("a state with a missing shard loaded")
