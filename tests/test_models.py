"""Architecture facts the paper relies on, and the registry's errors."""

import pytest
import torch

from pagdemo.models import MODELS, Normalize, build_model, class_count


def test_resnet18_matches_the_trades_architecture():
    model = build_model("resnet18", 10)
    # the CIFAR ResNet-18 of the TRADES code: 11.2M parameters
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


IMAGE_MODELS = [
    name for name in MODELS if name != "mlp"
]  # every registered image model, as the registry grows


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("size", [32, 96])
def test_every_image_model_maps_images_to_logits_at_any_side(name, size):
    model = build_model(name, 7).eval()
    assert model(torch.rand(2, 3, size, size)).shape == (2, 7)
    assert isinstance(model.normalize, Normalize)  # pixels in [0, 1] outside, normalization inside


def test_normalization_lives_inside_the_model():
    model = build_model("tinycnn").eval()
    x = torch.full((1, 3, 32, 32), 0.5)
    assert torch.allclose(
        model.normalize(x)[0, :, 0, 0], (0.5 - model.normalize.mean.flatten()) / model.normalize.std.flatten()
    )


def test_mlp_is_the_toy_network():
    model = build_model("mlp", 2)
    assert [p.shape for p in model.parameters()] == [(32, 2), (32,), (2, 32), (2,)]


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*resnet18"):
        build_model("resnet50")
    assert set(MODELS) >= {"resnet18", "resnet18_stl", "tinycnn", "mlp"}


def test_class_count_needs_no_forward():
    model = build_model("tinycnn", 7).train()
    before = [b.clone() for b in model.buffers()]
    assert class_count(model) == 7
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))  # no probe forward moved BatchNorm
