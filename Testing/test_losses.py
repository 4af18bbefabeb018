"""Papers 004 and 000's loss terms against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from MRIDenoiseLib.training.losses import (
    consensus_loss,
    cycle_loss,
    discriminator_loss,
    generator_adversarial_loss,
    image_consistency,
    kl_to_standard_normal,
    squared_error,
    weight_decay,
)


def _images(*rows: list[float]) -> torch.Tensor:
    """A batch of 1x1x2 images, one per row."""
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1, -1)


def test_consensus_loss_is_equation_8():
    first_output, second_output = _images([1.0, 2.0]), _images([0.0, 2.0])
    first_noisy, second_noisy = _images([1.0, 1.0]), _images([3.0, 2.0])
    # 1/2 ||f1 - y2||^2 = 1/2 (4 + 0); 1/2 ||f2 - y1||^2 = 1/2 (1 + 1); -1/4 ||f1 - f2||^2 = -1/4 (1 + 0)
    expected = 2.0 + 1.0 - 0.25
    assert consensus_loss(first_output, second_output, first_noisy, second_noisy).item() == pytest.approx(expected)


def test_consensus_loss_averages_over_the_batch():
    zeros = _images([0.0, 0.0], [0.0, 0.0])
    targets = _images([1.0, 1.0], [3.0, 3.0])  # per example 1/2 * 2 and 1/2 * 18, twice (both members)
    assert consensus_loss(zeros, zeros, targets, targets).item() == pytest.approx((2.0 + 18.0) / 2)


def test_weight_decay_is_equation_10():
    first, second = nn.Linear(2, 1), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -2.0]]))
        first.bias.fill_(3.0)
        second.weight.fill_(0.5)
    assert weight_decay(first, second).item() == pytest.approx(1 + 4 + 9 + 0.25)


def test_image_consistency_and_squared_error():
    assert image_consistency(_images([1.0, 2.0]), _images([0.0, 0.0])).item() == pytest.approx(5.0)
    assert squared_error(_images([1.0, 1.0], [0.0, 0.0]), _images([0.0, 0.0], [0.0, 2.0])).item() == pytest.approx(
        (2.0 + 4.0) / 2
    )


def test_kl_is_equation_2():
    mean = torch.tensor([[0.5, -1.0]])
    log_variance = torch.tensor([[0.0, math.log(2.0)]])
    # 1/2 [(0.25 + 1 - 0 - 1) + (1 + 2 - log 2 - 1)]
    expected = 0.5 * (0.25 + 2.0 - math.log(2.0))
    assert kl_to_standard_normal(mean, log_variance).item() == pytest.approx(expected)
    assert kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_adversarial_losses_are_equations_3_and_5():
    real, fake = torch.tensor([0.0]), torch.tensor([math.log(3.0)])  # D(real) = 1/2, D(fake) = 3/4
    expected = -math.log(0.5) - math.log(1 - 0.75)
    assert discriminator_loss(real, fake).item() == pytest.approx(expected)
    assert generator_adversarial_loss(fake).item() == pytest.approx(-math.log(0.75))


def test_cycle_loss_is_equation_7_per_domain():
    assert cycle_loss(_images([1.0, -1.0]), _images([0.0, 1.0])).item() == pytest.approx(1.5)


def test_cycle_loss_divides_each_example_by_its_scale():
    original, reconstructed = _images([1.0, -1.0], [0.0, 0.0]), _images([0.0, 1.0], [0.5, 0.5])
    # per example: 1.5 and 0.5; divided by 0.5 and 0.1: 3 and 5; mean 4
    scaled = cycle_loss(original, reconstructed, torch.tensor([0.5, 0.1]))
    assert scaled.item() == pytest.approx(4.0)
