"""Paper 003 (Thomas et al.): UNet-DCTD-A, a U-Net with a ResNet-18 encoder and attention.

- Encoder: ResNet-18 (MONAI's implementation, 2-D), whose weights can be initialised from a
  ResNet-18 state dict (torchvision key names) saved as safetensors: transfer learning.
- Bridge: dilated 3x3 convolutions (dilation 2 and 4) at the deepest stage, widening the
  receptive field without more downsampling.
- Decoder: at every stage, up-sampling, concatenation with the encoder skip, two 3x3
  convolutions with batch norm, then spatial-and-channel squeeze-and-excitation (scSE).
Input: three adjacent slices as the three "colour" channels; output: the denoised centre slice.
Any in-plane size is padded to a multiple of 32 and cropped back. Blind: no noise-level input.
With ``residual=True`` the head predicts the noise, which is subtracted from the centre slice
(the paper predicts the image itself; the residual form keeps fine detail at low noise levels).
With ``noise_map=True`` the engine's noise-level map is a fourth input channel (the paper's model
is blind); the ResNet stem then has one more input channel than ImageNet weights. With
``noise_scaled=True`` as well, the head predicts the noise in units of that map and the correction
is the prediction times the map, so the network cannot change a clean slice much whatever its
error floor: at 1 % noise the correction is a hundredth of what the head outputs. A
``correction_bound`` (in units of the map) squashes the head through ``bound * tanh(head / bound)``
first, so no pixel moves by more than that many noise levels, even where the head extrapolates.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import resnet18
from safetensors.torch import load_file
from torch import nn

from .contract import SliceNetwork
from .correction import check_correction_arguments, noise_scaled_correction
from .padding import crop_to, pad_to_multiple


class SpatialChannelSqueezeExcitation(nn.Module):
    """scSE (Roy et al. 2018): channel gating from pooled features plus per-pixel spatial gating."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.spatial_gate = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features * self.channel_gate(features) + features * self.spatial_gate(features)


def _conv_block(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _DecoderStage(nn.Module):
    def __init__(self, deeper: int, skip: int, out: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.convs = nn.Sequential(_conv_block(deeper + skip, out), _conv_block(out, out))
        self.attention = SpatialChannelSqueezeExcitation(out)

    def forward(self, features: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.attention(self.convs(torch.cat([self.up(features), skip], dim=1)))


class UNetDCTDA(SliceNetwork):
    """``(B, 2*context+1, H, W)`` noisy slices -> denoised centre slice ``(B, 1, H, W)``."""

    def __init__(
        self,
        context: int = 1,
        width: float = 1.0,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 32),
        residual: bool = False,
        noise_map: bool = False,
        noise_scaled: bool = False,
        correction_bound: float | None = None,
    ) -> None:
        """``width`` scales the ResNet-18 (1.0: the standard one, loadable from torchvision weights)."""
        super().__init__()
        if noise_scaled and not noise_map:
            raise ValueError("noise_scaled needs residual=True and noise_map=True")
        check_correction_arguments(residual, noise_scaled, correction_bound)
        self.context = context
        self.residual = residual
        self.noise_scaled = noise_scaled
        self.correction_bound = correction_bound
        self.noise_level_input = noise_map
        inputs = 2 * context + 1 + int(noise_map)
        self.encoder = resnet18(
            spatial_dims=2,
            n_input_channels=inputs,
            num_classes=1,
            conv1_t_size=7,
            conv1_t_stride=2,
            widen_factor=width,
        )
        self.encoder.avgpool = nn.Identity()  # type: ignore[assignment]  # the classifier head is not used
        self.encoder.fc = nn.Identity()  # type: ignore[assignment]
        stem, *stages = (int(c * width) for c in (64, 64, 128, 256, 512))
        deepest = stages[-1]
        self.bridge = nn.Sequential(
            _conv_block(deepest, deepest, dilation=2), _conv_block(deepest, deepest, dilation=4)
        )
        widths = [deepest, *decoder_channels]
        skips = [stages[2], stages[1], stages[0], stem, inputs]
        self.decoder = nn.ModuleList(
            _DecoderStage(widths[i], skips[i], widths[i + 1]) for i in range(len(decoder_channels))
        )
        self.head = nn.Conv2d(decoder_channels[-1], 1, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(inputs, 32)
        encoder = self.encoder
        stem = encoder.act(encoder.bn1(encoder.conv1(padded)))  # 1/2
        level1 = encoder.layer1(encoder.maxpool(stem))  # 1/4
        level2 = encoder.layer2(level1)  # 1/8
        level3 = encoder.layer3(level2)  # 1/16
        features = self.bridge(encoder.layer4(level3))  # 1/32
        for stage, skip in zip(self.decoder, (level3, level2, level1, stem, padded), strict=True):
            features = stage(features, skip)
        output = crop_to(self.head(features), size)
        if not self.residual:
            return output
        if self.noise_scaled:
            output = noise_scaled_correction(output, inputs[:, -1:], self.correction_bound)
        return inputs[:, self.context : self.context + 1] - output

    def load_encoder(self, path: str | Path) -> list[str]:
        """Initialise the encoder from a ResNet-18 state dict in a safetensors file (never pickle).

        Keys follow torchvision's names; the classifier and, when the channel count differs, the
        first convolution are skipped. Returns the keys that were not loaded.
        """
        state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("fc.")}
        own = self.encoder.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.encoder.load_state_dict(usable, strict=False)
        return sorted(set(own) - set(usable))
