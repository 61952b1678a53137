"""pagdemo.viz.grid: the PAG picture streams, stays in the ball, is deterministic and shows the input as it
is."""

import math

import numpy as np
import pytest
import torch
from pictures import CLASSES

from pagdemo.viz.draw import to_uint8
from pagdemo.viz.grid import GridSpec, pag_grid_steps


def _grid(models, x, targets=None, norm="l2", eps=4.0, steps=6, min_interval=0.0):
    spec = GridSpec(["a", "b"], CLASSES, targets or list(range(10)), "test")
    return list(pag_grid_steps(models, x, spec, norm, eps, steps, min_interval=min_interval))


@pytest.mark.parametrize("norm, eps", [("l2", 4.0), ("linf", 16 / 255)])
def test_grid_streams_every_step_and_stays_in_the_ball(models, x, norm, eps):
    frames = _grid(models, x, norm=norm, eps=eps)
    assert [f.step for f in frames] == list(range(7))
    last = frames[-1]
    assert last.images.shape == (2, 10, 3, 32, 32) and last.probs.shape == (2, 10)
    delta = last.images - x
    size = delta.flatten(2).norm(dim=2) if norm == "l2" else delta.flatten(2).abs().amax(dim=2)
    assert size.max() <= eps + 1e-5
    assert last.images.min() >= 0 and last.images.max() <= 1
    assert torch.equal(frames[0].images, x.expand(2, 10, 3, 32, 32))


def test_targeted_pgd_raises_the_target_probability(models, x):
    frames = _grid(models, x)
    assert (frames[-1].probs > frames[0].probs).all()  # an untrained model barely moves, but always upwards
    assert np.all(np.diff([f.probs.mean() for f in frames]) > 0)


def test_grid_is_deterministic_and_labelled(models, x):
    a, b = _grid(models, x)[-1], _grid(models, x)[-1]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.probs, b.probs)
    assert a.image.dtype == np.uint8 and a.image.ndim == 3 and a.image.shape[2] == 3
    assert a.image.shape[1] > 11 * 96 and a.image.shape[0] > 2 * 96  # 11 columns (input + 10 targets), 2 rows


def test_grid_shows_the_input_pixel_for_pixel(models, x):
    image = _grid(models, x, steps=1)[-1].image
    cell = to_uint8(x, 3)
    hits = [
        (i, j)
        for i in range(image.shape[0] - 95)
        for j in range(0, 400)
        if image[i, j, 0] == cell[0, 0, 0] and np.array_equal(image[i : i + 96, j : j + 96], cell)
    ]
    assert len(hits) == 2  # the input column, once per model row


def test_single_target_and_throttled_stream(models, x):
    frames = _grid(models, x, targets=[3], min_interval=math.inf)
    assert [f.step for f in frames] == [0, 6]  # the clean grid and the last step only
    assert frames[-1].probs.shape == (2, 1)
    assert frames[-1].image.shape[1] < _grid(models, x, steps=1)[-1].image.shape[1]


def test_to_uint8_enlarges_pixel_for_pixel():
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    a = to_uint8(x, 3)
    assert a.shape == (6, 6, 3) and a.dtype == np.uint8 and tuple(a[5, 5]) == (0, 128, 255)
