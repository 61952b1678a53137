"""The g(x, t) realizations: what each one points at."""

import pytest
import torch

from pagdemo.models import build_model
from pagdemo.pag.targets import NearestNeighborTarget, TeacherGradientTarget, build_target


@pytest.fixture
def train():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(100) % 10


def test_one_image_points_at_a_fixed_training_image_of_each_class(train):
    images, labels = train
    t = build_target("oi", images, labels, 10, seed=3)
    picks = t.describe()["indices"]
    assert [labels[i].item() for i in picks] == list(range(10))
    x = torch.rand(4, 3, 8, 8)
    g = t(x)
    assert g.shape == (4, 10, 3, 8, 8)
    assert torch.allclose(g[2, 5] + x[2], images[picks[5]].float() / 255)
    assert build_target("oi", images, labels, 10, seed=3).describe() == t.describe()


def test_class_mean_is_the_mean_scaled_to_an_image_norm(train):
    images, labels = train
    t = build_target("cm", images, labels, 10)
    x = images.float() / 255
    for c in (0, 7):
        members = x[labels == c]
        assert torch.allclose(t.reps[c].norm(), members.flatten(1).norm(dim=1).mean(), rtol=0.02)
        cos = torch.nn.functional.cosine_similarity(t.reps[c].flatten(), members.mean(0).flatten(), dim=0)
        assert cos > 0.99
    assert t.reps.min() >= 0 and t.reps.max() <= 1


def test_centred_class_mean_has_the_class_images_norm_about_grey(train):
    """The authors' space: the representative's departure from grey is the class mean's, at the class's mean
    ||x - 0.5||, and it is not clipped (it is a direction, not an image to show)."""
    images, labels = train
    t = build_target("cm", images, labels, 10, cm_scaling="centred")
    x = images.double() / 255
    for c in range(10):
        members = x[labels == c]
        rep = t.reps[c].double() - 0.5
        torch.testing.assert_close(
            rep.norm(), (members - 0.5).flatten(1).norm(dim=1).mean(), rtol=1e-5, atol=0
        )
        cos = torch.nn.functional.cosine_similarity(rep.flatten(), (members.mean(0) - 0.5).flatten(), dim=0)
        assert cos > 1 - 1e-6
    assert "grey" in t.describe()["scaling"] and (t.reps.min() < 0 or t.reps.max() > 1)
    black = build_target("cm", images, labels, 10)  # about black: another representative
    assert (black.reps - t.reps).abs().max() > 0.1


def test_class_mean_without_scaling_is_the_raw_mean(train):
    images, labels = train
    t = build_target("cm", images, labels, 10, cm_scaling="none")
    torch.testing.assert_close(t.reps[3], (images[labels == 3].float() / 255).mean(0))
    assert t.describe()["scaling"].startswith("none")
    with pytest.raises(ValueError, match="unknown Class Mean scaling 'max'"):
        build_target("cm", images, labels, 10, cm_scaling="max")


def test_nearest_neighbor_is_the_closest_sample_and_never_x_itself(train):
    images, labels = train
    t = NearestNeighborTarget(images, labels, 10, k=5, seed=0)
    own = t.bank_idx[4, :3]  # three bank images of class 4, fed back as x with their indices
    x = images[own].float() / 255
    g = t(x, labels[own], own)
    reps = g + x.unsqueeze(1)
    bank = images[t.bank_idx[4]].float() / 255
    for i in range(3):
        d = (bank - x[i]).flatten(1).norm(dim=1)
        d[i] = float("inf")  # its own image is excluded
        assert torch.allclose(reps[i, 4], bank[d.argmin()])
    assert (g[:, 4].flatten(1).norm(dim=1) > 0).all()
    assert torch.allclose(t(x)[:, 4], torch.zeros_like(x), atol=1e-6)  # without indices, x is its own NN


def test_rigd_returns_the_teachers_input_gradients():
    teacher = build_model("tinycnn").eval()
    x = torch.rand(3, 3, 32, 32)
    g = TeacherGradientTarget(teacher, "logit")(x)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(teacher(xr)[:, 2].sum(), xr)
    assert torch.allclose(g[:, 2], ref, atol=1e-6)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_unknown_target(train):
    with pytest.raises(ValueError, match="unknown target 'mean'"):
        build_target("mean", *train, 10)
    with pytest.raises(ValueError, match="fewer than k=50"):
        build_target("nn", *train, 10, k=50)
