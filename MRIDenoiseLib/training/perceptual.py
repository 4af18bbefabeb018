"""Perceptual loss: distances between feature maps of a frozen, pretrained network.

Two feature networks are supported (paper 003 uses VGG features; ImageNet weights cannot be
downloaded where the shipped models are trained, so an MRI-trained network is the default):

- the ResNet-18 encoder of a ``unet-dctd-a`` pretrained on MRI (the transfer stage's network);
- VGG-16 convolution layers from a safetensors file with torchvision's key names
  (``features.0.weight`` ...), when the user has one.

Grey slices are repeated over the feature network's input channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError
from ..nets.unet_dctd import UNetDCTDA

VGG16_LAYOUT = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool")
"""The first three VGG-16 blocks (torchvision ``features`` indices 0-16); deeper ones are not used."""
VGG16_TAPS = (3, 8, 15)
"""relu1_2, relu2_2, relu3_3."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetEncoderFeatures(nn.Module):
    """Stem, first and second residual stage of a UNet-DCTD-A encoder."""

    def __init__(self, network: UNetDCTDA) -> None:
        super().__init__()
        self.encoder = network.encoder
        self.slices = 2 * network.context + 1
        self.noise_map = network.noise_level_input

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Features of a grey image given as every input slice (and a zero noise level, if the network takes one)."""
        encoder = self.encoder
        image = image.expand(-1, self.slices, -1, -1)
        if self.noise_map:
            image = torch.cat([image, torch.zeros_like(image[:, :1])], dim=1)
        stem = encoder.act(encoder.bn1(encoder.conv1(image)))
        level1 = encoder.layer1(encoder.maxpool(stem))
        return [stem, level1, encoder.layer2(level1)]


class VGG16Features(nn.Module):
    """VGG-16 blocks 1-3 with torchvision's parameter names, fed ImageNet-normalised grey images."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for item in VGG16_LAYOUT:
            if item == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(previous, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                previous = int(item)
        self.features = nn.Sequential(*layers)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str | Path) -> VGG16Features:
        """Load the ``features.*`` tensors of a torchvision VGG-16 state dict saved as safetensors."""
        network = cls()
        wanted = network.state_dict()
        state = {k: v for k, v in load_file(str(path)).items() if k in wanted and k.startswith("features.")}
        missing = sorted(k for k in wanted if k.startswith("features.") and k not in state)
        if missing:
            raise InputError(f"{path} is not a VGG-16 state dict: missing {', '.join(missing[:4])}")
        network.load_state_dict(state, strict=False)
        return network

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = (image.expand(-1, 3, -1, -1) - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features):
            features = layer(features)
            if index in VGG16_TAPS:
                taps.append(features)
            if index >= VGG16_TAPS[-1]:
                break
        return taps


class PerceptualLoss(nn.Module):
    """Mean absolute difference of the feature maps of prediction and target, averaged over taps.

    The feature network is frozen and kept in evaluation mode (its batch statistics never change).
    """

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features.eval()
        for parameter in self.features.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.features(target)
        prediction_features = self.features(prediction)
        distances = [(p - t).abs().mean() for p, t in zip(prediction_features, target_features, strict=True)]
        return torch.stack(distances).mean()
