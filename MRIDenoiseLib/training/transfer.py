"""Transfer learning between training stages, and the perceptual loss built from it.

A config with ``transfer.model`` starts from a catalogue model's shipped weights. A config with
``transfer.config`` names a pretraining config. Its run lives beside the
fine-tuning run (``<output>/../<pretraining model id>``); it is trained (or resumed) first when it
has not finished, so one ``train`` command reproduces both stages. The fine-tuning stage starts
from the weights the pretraining config exports (its ``export_weights``: best or last).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..models.catalog import load_catalog
from ..models.store import resolve_weights
from ..models.weights import load_network
from ..nets.unet25d import ResidualUNet25D
from ..nets.unet_dctd import UNetDCTDA
from .checkpoints import CHECKPOINT_NAME, read_checkpoint, selected_weights_name
from .config import SupervisedConfig, load_config
from .export import RUNS_FOLDER
from .perceptual import PerceptualLoss, ResNetEncoderFeatures, VGG16Features


def pretraining_config(config: SupervisedConfig) -> SupervisedConfig | None:
    """The config of the stage this one starts from, if it starts from a trained stage."""
    if config.transfer is None or config.transfer.config is None:
        return None
    stage = load_config(config.relative_path(config.transfer.config))
    if not isinstance(stage, SupervisedConfig):
        raise ConfigError(
            f"transfer.config {config.transfer.config!r} is a {stage.kind} config; a supervised one is needed"
        )
    return stage


def pretraining_run_dir(pretraining: SupervisedConfig, output_dir: Path) -> Path:
    """Where the pretraining stage of a run in ``output_dir`` lives: beside it when the run sits in a
    ``runs`` folder (the project's layout, where chains of configs share their stages), else inside the
    run folder, in ``stages/``, so a run the user put elsewhere keeps everything it made in one place."""
    output_dir = Path(output_dir)
    if output_dir.parent.name == RUNS_FOLDER:
        return output_dir.parent / pretraining.model.id
    return output_dir / "stages" / pretraining.model.id


def pretraining_finished(pretraining: SupervisedConfig, run_dir: Path) -> bool:
    checkpoint = read_checkpoint(run_dir / CHECKPOINT_NAME)
    if checkpoint is None or not (run_dir / selected_weights_name(pretraining.export_weights)).exists():
        return False
    return json.loads(checkpoint["state"])["step"] >= pretraining.optim.steps


def apply_transfer(network: nn.Module, config: SupervisedConfig, output_dir: Path) -> nn.Module | None:
    """Initialise ``network`` as the config's transfer section says; returns the pretrained network.

    Raises FileNotFoundError when the pretraining stage has not been trained yet.
    """
    if config.transfer is None:
        return None
    if config.transfer.encoder_weights is not None:
        if not isinstance(network, UNetDCTDA):
            raise TypeError("transfer.encoder_weights needs a unet-dctd-a network")
        network.load_encoder(config.relative_path(config.transfer.encoder_weights))
        return None
    if config.transfer.model is not None:
        return _load_catalogue_model(network, config.transfer.model, config)
    pretraining = pretraining_config(config)
    assert pretraining is not None  # transfer.config is set: exactly one of config and encoder_weights is
    run_dir = pretraining_run_dir(pretraining, output_dir)
    if not pretraining_finished(pretraining, run_dir):
        raise FileNotFoundError(f"the pretraining stage {pretraining.model.id!r} has not finished in {run_dir}")
    weights = run_dir / selected_weights_name(pretraining.export_weights)
    pretrained = load_network(weights, pretraining.model.architecture, pretraining.model.arguments)
    if config.transfer.widen:
        network_from, source = _residual_unets(network, pretrained, "transfer.widen", pretraining.model.id)
        network_from.load_narrower(source)
    else:
        _copy_weights(network, pretrained, config, pretraining.model.id)
    return pretrained


def _load_catalogue_model(network: nn.Module, model_id: str, config: SupervisedConfig) -> nn.Module:
    """Copy a catalogue model's verified weights into ``network``: the same network, or with
    ``transfer.sum_skips`` the same widths with some skips summed."""
    entry = load_catalog().get(model_id)
    converting = config.transfer is not None and config.transfer.sum_skips
    matches = (entry.architecture, entry.network_arguments()) == (config.model.architecture, config.model.arguments)
    if not matches and not (converting and entry.architecture == config.model.architecture):
        raise ConfigError(
            f"transfer.model {model_id!r} is a {entry.architecture} {entry.network_arguments()}; "
            f"this config trains a {config.model.architecture} {config.model.arguments}"
        )
    pretrained = load_network(resolve_weights(entry), entry.architecture, entry.network_arguments())
    _copy_weights(network, pretrained, config, model_id)
    return pretrained


def _copy_weights(network: nn.Module, pretrained: nn.Module, config: SupervisedConfig, source_id: str) -> None:
    if config.transfer is not None and config.transfer.sum_skips:
        network_from, source = _residual_unets(network, pretrained, "transfer.sum_skips", source_id)
        try:
            network_from.load_concatenating(source)
        except ValueError as error:
            raise ConfigError(f"transfer.sum_skips from {source_id!r}: {error}") from error
    else:
        network.load_state_dict(pretrained.state_dict())


def _residual_unets(
    network: nn.Module, pretrained: nn.Module, option: str, source_id: str
) -> tuple[ResidualUNet25D, ResidualUNet25D]:
    if not isinstance(pretrained, ResidualUNet25D):  # this stage's own network is checked at config load
        raise TypeError(f"{option} needs a residual-unet-2.5d to start from, not {source_id!r}")
    if not isinstance(network, ResidualUNet25D):
        raise TypeError(f"{option} needs a residual-unet-2.5d network to start")
    return network, pretrained


def perceptual_loss(config: SupervisedConfig, pretrained: nn.Module | None) -> PerceptualLoss | None:
    """The frozen feature network the config asks for, wrapped as a loss, or None."""
    if config.perceptual is None:
        return None
    if config.perceptual.features == "transfer":
        if not isinstance(pretrained, UNetDCTDA):
            raise TypeError("perceptual features 'transfer' need a pretrained unet-dctd-a")
        return PerceptualLoss(ResNetEncoderFeatures(pretrained))
    return PerceptualLoss(VGG16Features.from_file(config.relative_path(config.perceptual.features)))
