"""Every registered network: shapes for odd sizes, the noise-level convention, encoder loading."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from MRIDenoiseLib.inference import denoise_slices, uses_noise_level
from MRIDenoiseLib.nets import ARCHITECTURES, DIFFUSION_ARCHITECTURES, build_network
from MRIDenoiseLib.nets.unet_dctd import UNetDCTDA

SMALL = {
    "residual-unet-2.5d": {"context": 2, "channels": [8, 16, 24]},
    "cdae": {"context": 1, "filters": [8, 16, 16, 16]},
    "unet-dctd-a": {"context": 1, "width": 0.25, "decoder_channels": [32, 16, 8, 8, 8]},
    "consensus-pair": {"context": 1, "channels": [8, 16]},
    "disentangled-denoiser": {"width": 8, "blocks": 1, "code": 2},
    "cyclegan-generator": {"width": 8, "blocks": 1},
}
NOISE_SCALED_GAN = {"residual": True, "noise_scaled": True, "correction_bound": 2.0}


def test_every_image_architecture_has_a_small_test_configuration():
    assert set(SMALL) == set(ARCHITECTURES) - DIFFUSION_ARCHITECTURES


@pytest.mark.parametrize("architecture", sorted(SMALL))
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (20, 31)])
def test_odd_in_plane_sizes_come_back_unchanged(architecture, size):
    network = build_network(architecture, SMALL[architecture]).eval()
    channels = 2 * network.context + 1 + (1 if uses_noise_level(network) else 0)
    with torch.no_grad():
        output = network(torch.rand(2, channels, *size))
    assert output.shape == (2, 1, *size)


@pytest.mark.parametrize("architecture", sorted(SMALL))
def test_inference_engine_feeds_each_network_its_inputs(architecture):
    network = build_network(architecture, SMALL[architecture]).eval()
    volume = torch.rand(5, 40, 36).numpy()
    assert denoise_slices(network, volume, 0.05).shape == volume.shape


@pytest.mark.parametrize("architecture", ["disentangled-denoiser", "cyclegan-generator"])
def test_noise_scaled_gan_generators_move_pixels_by_at_most_bound_noise_levels(architecture):
    network = build_network(architecture, {**SMALL[architecture], **NOISE_SCALED_GAN}).eval()
    assert uses_noise_level(network)
    generator = network.clean_generator if hasattr(network, "clean_generator") else network.decoder
    image = torch.rand(2, 1, 27, 35)
    with torch.no_grad():
        generator.head.weight.zero_()
        generator.head.bias.fill_(1.0)  # "one noise level" everywhere: 2 tanh(1 / 2) levels after the bound
        for level in (0.01, 0.2):
            output = network(torch.cat([image, torch.full_like(image, level)], dim=1))
            torch.testing.assert_close(output, image + level * 2.0 * math.tanh(0.5))
        generator.head.bias.fill_(1e4)  # far outside: still no more than two noise levels
        output = network(torch.cat([image, torch.full_like(image, 0.05)], dim=1))
        assert float((output - image).abs().max()) <= 2.0 * 0.05 + 1e-6
    # the engine hands these networks its noise-level map: a higher level moves pixels further
    volume = torch.rand(3, 24, 20).numpy()
    low, high = (denoise_slices(network, volume, level) for level in (0.01, 0.1))
    assert abs(high - volume).max() > 5 * abs(low - volume).max()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"noise_scaled": True}, "noise_scaled needs"), ({"residual": True, "correction_bound": 3.0}, "correction_bound")],
)
def test_gan_correction_arguments_are_checked(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_network("cyclegan-generator", {**SMALL["cyclegan-generator"], **arguments})


def test_cdae_output_stays_inside_its_sigmoid_range():
    network = build_network("cdae", {"intensity_range": 2.0}).eval()
    with torch.no_grad():
        output = network(torch.rand(1, 3, 24, 24) * 5)
    assert float(output.min()) >= 0.0 and float(output.max()) <= 2.0


def test_unet_dctd_residual_variant_subtracts_its_noise_estimate_from_the_centre_slice():
    network = build_network("unet-dctd-a", {**SMALL["unet-dctd-a"], "residual": True}).eval()
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.zero_()
        slices = torch.rand(2, 3, 27, 35)
        torch.testing.assert_close(network(slices), slices[:, 1:2])


def test_unet_dctd_noise_scaled_correction_is_proportional_to_the_noise_map():
    arguments = {**SMALL["unet-dctd-a"], "residual": True, "noise_map": True, "noise_scaled": True}
    network = build_network("unet-dctd-a", arguments).eval()
    slices = torch.rand(2, 3, 27, 35)
    with torch.no_grad():
        network.head.bias.fill_(1.0)
        network.head.weight.zero_()  # the head says "one unit of noise" everywhere
        for level in (0.01, 0.2):
            output = network(torch.cat([slices, torch.full((2, 1, 27, 35), level)], dim=1))
            torch.testing.assert_close(output, slices[:, 1:2] - level)
    with pytest.raises(ValueError, match="noise_scaled needs"):
        build_network("unet-dctd-a", {**SMALL["unet-dctd-a"], "noise_scaled": True})


def test_unet_dctd_correction_bound_limits_each_pixel_to_that_many_noise_levels():
    arguments = {
        **SMALL["unet-dctd-a"],
        "residual": True,
        "noise_map": True,
        "noise_scaled": True,
        "correction_bound": 3.0,
    }
    network = build_network("unet-dctd-a", arguments).eval()
    slices = torch.rand(2, 3, 27, 35)
    level = 0.02
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.fill_(1000.0)  # a head that extrapolates wildly
        output = network(torch.cat([slices, torch.full((2, 1, 27, 35), level)], dim=1))
        torch.testing.assert_close(output, slices[:, 1:2] - 3.0 * level)
        network.head.bias.fill_(0.01)  # small predictions pass almost unchanged
        output = network(torch.cat([slices, torch.full((2, 1, 27, 35), level)], dim=1))
        torch.testing.assert_close(output, slices[:, 1:2] - 0.01 * level, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="correction_bound needs"):
        build_network("unet-dctd-a", {**SMALL["unet-dctd-a"], "correction_bound": 3.0})


def test_cdae_fusion_gate_mixes_the_autoencoder_image_with_the_input():
    network = build_network("cdae", {**SMALL["cdae"], "fusion": True}).eval()
    inputs = torch.cat([torch.rand(2, 3, 27, 35), torch.full((2, 1, 27, 35), 0.1)], dim=1)
    plain = build_network("cdae", SMALL["cdae"]).eval()
    plain.load_state_dict({k: v for k, v in network.state_dict().items() if not k.startswith("gate.")})
    with torch.no_grad():
        network.gate[0].weight.zero_()
        network.gate[0].bias.fill_(-50.0)  # gate closed: the input comes back
        torch.testing.assert_close(network(inputs), inputs[:, 1:2])
        network.gate[0].bias.fill_(50.0)  # gate open: the paper's autoencoder image
        torch.testing.assert_close(network(inputs), plain(inputs[:, :3]))


def test_unet_dctd_encoder_loads_a_resnet18_state_dict(tmp_path):
    reference = UNetDCTDA(context=1, width=1.0)
    state = {
        k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.encoder.state_dict().items()
    }
    state["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet classifier is ignored
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    network = UNetDCTDA(context=1, width=1.0)
    skipped = network.load_encoder(tmp_path / "resnet18.safetensors")
    assert skipped == []
    assert torch.all(network.encoder.layer4[1].conv2.weight == 0.5)


def test_consensus_pair_on_one_scan_averages_its_members_and_on_two_applies_equation_9():
    pair = build_network("consensus-pair", SMALL["consensus-pair"]).eval()
    first, second = torch.rand(2, 4, 24, 20), torch.rand(2, 4, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(pair(first), 0.5 * (pair.first(first) + pair.second(first)))
        torch.testing.assert_close(pair.combine(first, second), 0.5 * (pair.first(first) + pair.second(second)))


def test_a_widened_unet_computes_what_the_narrow_one_did_and_its_added_channels_learn():
    from MRIDenoiseLib.nets.unet25d import ResidualUNet25D

    torch.manual_seed(3)
    narrow = ResidualUNet25D(2, (8, 12, 16))
    for parameter in narrow.parameters():
        parameter.data.normal_(0.0, 0.2)  # far from the initialisation, so copying errors would show
    wide = ResidualUNet25D(2, (12, 12, 20))
    wide.load_narrower(narrow)
    inputs = torch.rand(2, 6, 36, 28)
    torch.testing.assert_close(wide(inputs), narrow(inputs), atol=1e-5, rtol=0)
    assert (wide(inputs) - inputs[:, 2:3]).abs().mean() > 0.01  # the copied function is not the identity

    # the zeroed weights from the added channels into the original ones receive gradients
    wide(inputs).square().mean().backward()
    assert wide.head.weight.grad[0, 8:].abs().sum() > 0
    assert wide.encoders[0][2].weight.grad[:8, 8:].abs().sum() > 0


def test_widening_refuses_a_network_it_cannot_contain():
    from MRIDenoiseLib.nets.unet25d import ResidualUNet25D

    with pytest.raises(ValueError, match="cannot widen"):
        ResidualUNet25D(2, (8, 8, 8)).load_narrower(ResidualUNet25D(2, (12, 8, 8)))
    with pytest.raises(ValueError, match="cannot widen"):
        ResidualUNet25D(2, (8, 8, 8)).load_narrower(ResidualUNet25D(1, (8, 8, 8)))


def test_a_unet_that_sums_its_shallow_skips_halves_those_decoders_inputs_and_widens_like_the_others():
    from MRIDenoiseLib.nets.unet25d import ResidualUNet25D

    torch.manual_seed(5)
    summing = ResidualUNet25D(1, (8, 12, 16), summed_skips=1)
    # decoders run deepest first: the half-resolution one concatenates, the full-resolution one sums
    assert [decoder[0].in_channels for decoder in summing.decoders] == [24, 8]
    assert summing(torch.rand(2, 4, 30, 26)).shape == (2, 1, 30, 26)
    for parameter in summing.parameters():
        parameter.data.normal_(0.0, 0.2)
    wide = ResidualUNet25D(1, (12, 12, 20), summed_skips=1)
    wide.load_narrower(summing)
    inputs = torch.rand(2, 4, 32, 32)
    torch.testing.assert_close(wide(inputs), summing(inputs), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="summed skips"):
        ResidualUNet25D(1, (12, 12, 20)).load_narrower(summing)
    with pytest.raises(ValueError, match="summed_skips must be between 0 and 2"):
        ResidualUNet25D(1, (8, 12, 16), summed_skips=3)


def test_a_summing_unet_started_from_a_concatenating_one_passes_the_skips_as_it_did():
    from MRIDenoiseLib.nets.unet25d import ResidualUNet25D

    torch.manual_seed(6)
    concatenating = ResidualUNet25D(2, (8, 12, 16))
    for parameter in concatenating.parameters():
        parameter.data.normal_(0.0, 0.2)
    summing = ResidualUNet25D(2, (8, 12, 16), summed_skips=2)
    summing.load_concatenating(concatenating)
    inputs = torch.rand(2, 6, 32, 32)
    assert (summing(inputs) - concatenating(inputs)).abs().max() > 1e-3  # the deeper features now enter differently
    # with nothing coming up from below, each decoder reads only its skip: then both compute the same
    for network in (concatenating, summing):
        for upsampler in network.upsamplers:
            upsampler.weight.data.zero_()
            upsampler.bias.data.zero_()
    torch.testing.assert_close(summing(inputs), concatenating(inputs), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cannot start"):
        summing.load_concatenating(ResidualUNet25D(2, (8, 12, 20)))
    with pytest.raises(ValueError, match="cannot start"):
        ResidualUNet25D(2, (8, 12, 16), summed_skips=1).load_concatenating(summing)


def test_a_summing_unet_rebuilds_from_its_arguments_and_a_consensus_pair_of_it_sums_too():
    from MRIDenoiseLib.nets.consensus import ConsensusPair
    from MRIDenoiseLib.nets.unet25d import ResidualUNet25D

    summing = ResidualUNet25D(1, (8, 12, 16), summed_skips=2)
    assert summing.arguments == {"context": 1, "channels": [8, 12, 16], "summed_skips": 2}
    assert ResidualUNet25D(1, (8, 12)).arguments == {"context": 1, "channels": [8, 12]}  # as older entries store them
    rebuilt = build_network("residual-unet-2.5d", summing.arguments)
    rebuilt.load_state_dict(summing.state_dict())  # the same layers, shape for shape
    inputs = torch.rand(1, 4, 24, 24)
    torch.testing.assert_close(rebuilt(inputs), summing(inputs))
    pair = ConsensusPair(summing.context, summing.channels, summing.summed_skips)
    pair.first.load_state_dict(summing.state_dict())
    assert pair.second.arguments == summing.arguments
