"""Trainer for the q-space autoencoders of paper 001 (VAE and its DAE baseline).

Training data are simulated: random brain-like tensors, S_k = exp(-b g^T D g) for the chosen
gradient table, Gaussian (negatives clipped) or Rician noise with a per-sample sigma. Loss:
Huber reconstruction (+ the KL term with the paper's linear warm-up for the VAE); Adam.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..diffusion import B0_THRESHOLD, GradientTable, normalise_signals, paper_scheme, read_bval_bvec, unit_directions
from ..dti import add_signal_noise, random_tensors, signals
from ..errors import ModelError
from ..nets import build_network
from ..nets.qspace import QSpaceVAE, kl_divergence, kl_weight
from ..progress import CancelToken, ProgressCallback
from .checkpoints import BEST_WEIGHTS_NAME, read_run_state
from .config import QSpaceRunConfig, QSpaceSettings
from .loop import LOWEST_MSE, LoopSettings, Reporting, TrainingLoop, TrainingState
from .trainer import hardware_summary


def load_scheme(scheme: str, config_folder: Path | None) -> GradientTable:
    """'paper' or an FSL .bval file (with its .bvec beside it)."""
    if scheme == "paper":
        return paper_scheme()
    bval = Path(scheme) if Path(scheme).is_absolute() or config_folder is None else config_folder / scheme
    bvalues, directions = read_bval_bvec(bval, bval.with_suffix(".bvec"))
    return GradientTable(bvalues, unit_directions(directions))


def simulate_pairs(table: GradientTable, config: QSpaceSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) normalised signals for ``config.samples`` random tensors."""
    rng = np.random.default_rng(seed)
    clean = signals(random_tensors(config.samples, rng), table)
    low, high = config.sigma_range
    sigma = rng.uniform(low, high, size=(config.samples, 1))
    noisy = add_signal_noise(clean, sigma, config.noise, rng)
    noisy, scale = normalise_signals(noisy)
    return noisy.astype(np.float32), (clean / scale[:, None]).astype(np.float32)


class QSpaceTrainer:
    """Epoch-based training on simulated signals in the one training loop (a loop step is an epoch)."""

    def __init__(
        self,
        config: QSpaceRunConfig,
        output_dir: str | Path,
        show_progress: bool = True,
        cancel: CancelToken | None = None,
        table: GradientTable | None = None,
        progress: ProgressCallback | None = None,
        label: str = "epochs",
    ) -> None:
        """``table`` overrides the config's scheme (used to train for a user's own gradient table);
        ``progress`` hears of every epoch, under ``label``."""
        self.config = config
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        setup = config.qspace
        self.table = table or load_scheme(setup.scheme, config.source.parent if config.source else None)
        self.arguments = {**config.model.arguments, "measurements": self.table.size}
        self.network = build_network(config.model.architecture, self.arguments)
        self.variational = isinstance(self.network, QSpaceVAE)
        noisy, clean = simulate_pairs(self.table, setup, config.seed)
        split = int(len(noisy) * (1 - setup.validation_fraction))
        self.train = (torch.from_numpy(noisy[:split]), torch.from_numpy(clean[:split]))
        self.validation = (torch.from_numpy(noisy[split:]), torch.from_numpy(clean[split:]))
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.optim.learning_rate)
        self.loss_function = {"huber": nn.HuberLoss, "l2": nn.MSELoss, "l1": nn.L1Loss}[config.optim.loss]()
        self.generator = torch.Generator().manual_seed(config.seed)
        settings = LoopSettings(
            total_steps=setup.epochs,
            validate_every=1,
            selection=LOWEST_MSE,
            log_every=1,
            run_dir=Path(output_dir),
            label=label,
        )
        self.loop = TrainingLoop(self, settings, Reporting(bar=show_progress, callback=progress), cancel)

    @property
    def state(self) -> TrainingState:
        return self.loop.state

    def fit(self, max_minutes: float | None = None, max_steps: int | None = None) -> TrainingState:
        """Train to ``qspace.epochs`` epochs (state.step counts epochs), or until ``max_minutes`` pass or
        ``max_steps`` epochs of this call are done."""
        self.loop.state.hardware = hardware_summary(torch.device("cpu"))
        return self.loop.run(None if max_minutes is None else 60 * max_minutes, max_steps)

    def resume(self) -> bool:
        """Continue from the checkpoint in the output folder; False when there is none."""
        return self.loop.resume()

    # ---- the loop's task -------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One epoch over the simulated training signals (the VAE's KL weight warms up per epoch)."""
        setup, epoch = self.config.qspace, self.loop.state.step
        weight = kl_weight(epoch, setup.kl_start_epoch, setup.kl_step, setup.kl_maximum) if self.variational else 0.0
        order = torch.randperm(len(self.train[0]), generator=self.generator)
        totals = np.zeros(2)
        batch = self.config.optim.batch_size
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            reconstruction, kl = self._forward(self.network, self.train[0][index])
            loss = self.loss_function(reconstruction, self.train[1][index])
            if weight > 0:
                loss = loss + weight * kl
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            totals += (loss.item() * len(index), kl.item() * len(index))
        return {"loss": totals[0] / len(order), "kl": totals[1] / len(order), "kl_weight": weight}

    def validate(self, network: nn.Module) -> dict[str, float]:
        """Mean squared error against the clean signals of the held-out split."""
        with torch.no_grad():
            reconstruction, _ = self._forward(network, self.validation[0])
        return {"validation_mse": float(((reconstruction - self.validation[1]) ** 2).mean())}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.generator.set_state(payload["generator"])

    def save_weights(self, path: Path, network: nn.Module) -> None:
        from ..models.weights import save_weights

        save_weights(path, network, self.config.model.architecture, self.arguments)

    def _forward(self, network: nn.Module, noisy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction, and the VAE's KL divergence (0 for the DAE)."""
        if self.variational:
            reconstruction, mean, log_variance = network(noisy)
            return reconstruction, kl_divergence(mean, log_variance)
        return network(noisy), torch.zeros(())


def export_qspace_run(config: QSpaceRunConfig, run_dir: Path, models_dir: Path | None = None) -> Path:
    """Publish a q-space run: weights, a catalogue entry tied to its gradient table, a model card."""
    from ..models.paths import bundled_models_dir
    from .export import card_header, publish, read_history, run_summary

    models_dir = models_dir or bundled_models_dir()
    state = read_run_state(run_dir)
    table = load_scheme(config.qspace.scheme, config.source.parent if config.source else None)
    setup = config.qspace
    training = {
        **run_summary(config, state, "best"),
        "data": {
            "simulated": f"{setup.samples} random tensors, {setup.noise} noise, sigma {list(setup.sigma_range)}",
            "split": f"{1 - setup.validation_fraction:.0%} train / {setup.validation_fraction:.0%} validation",
        },
    }
    metrics = {"validation_mse": round(state["best_validation_mse"], 6)}
    fields = {
        "input": "dwi",
        "gradient_table": {"bvalues": table.bvalues.tolist(), "directions": table.directions.tolist()},
    }
    entry = publish(config, run_dir / BEST_WEIGHTS_NAME, models_dir, training, metrics, fields)
    history = read_history(run_dir)
    lines = [
        *card_header(entry),
        f"| gradient table | {table.size} measurements, b-values {sorted(set(table.bvalues.round().tolist()))} |",
        f"| training data | {training['data']['simulated']}; {training['data']['split']} |",
        f"| epochs | {state['step']} (best at {state['best_step']}), batch {config.optim.batch_size} |",
        f"| wall time | {state['wall_seconds'] / 60:.1f} min on {state.get('hardware', '')} |",
        f"| sha256 | `{entry['sha256']}` |",
        f"| reproduce | `{training['command']}` |",
        "",
        "| epoch | loss | validation MSE |",
        "|---|---|---|",
    ]
    lines += [
        f"| {h['step']} | {h['loss']:.5f} | {h['validation_mse']:.6f} |" for h in history if "validation_mse" in h
    ]
    (models_dir / f"{config.model.id}.md").write_text("\n".join(lines) + "\n")
    return models_dir / entry["weights"]


TABLE_MODEL_SAMPLES = 100_000
TABLE_MODEL_EPOCHS = 12
TABLE_MODEL_SIGMA_RANGE = (0.0, 0.3)
"""Rician noise up to 30 % of S0: the range of routine clinical DWI (as the shipped Philips models)."""


def table_key(table: GradientTable) -> str:
    """A short stable name for a gradient table (b-values and direction angles, rounded)."""
    import hashlib

    weighted = table.bvalues > B0_THRESHOLD
    gram = np.abs(table.directions[weighted] @ table.directions[weighted].T)
    digest = hashlib.sha256(np.round(table.bvalues, -1).tobytes() + np.round(gram, 2).tobytes()).hexdigest()
    return digest[:10]


def train_for_table(
    table: GradientTable,
    architecture: str = "qspace-vae",
    progress=None,
    cancel: CancelToken | None = None,
    max_minutes: float = 5.0,
):
    """Train a q-space model for ``table`` from simulation, register it as a user model, return its entry.

    About a minute on a laptop CPU; progress is reported per epoch.
    """
    from ..models.catalog import ModelEntry, register_user_model
    from ..models.hashing import sha256_of
    from ..models.paths import user_models_dir
    from .config import ModelConfig, QSpaceOptimConfig

    key = table_key(table)
    model_id = f"{architecture}-table-{key}"
    run_dir = user_models_dir() / model_id
    config = QSpaceRunConfig(
        kind="qspace",
        model=ModelConfig(
            id=model_id,
            title=f"q-space {architecture[7:].upper()} for gradient table {key}",
            architecture=architecture,
            arguments={"latent": 7},
        ),
        qspace=QSpaceSettings(
            samples=TABLE_MODEL_SAMPLES,
            epochs=TABLE_MODEL_EPOCHS,
            noise="rician",
            sigma_range=TABLE_MODEL_SIGMA_RANGE,
        ),
        optim=QSpaceOptimConfig(batch_size=512, learning_rate=2e-3, loss="huber"),
        seed=7,
    )
    trainer = QSpaceTrainer(
        config, run_dir, False, cancel, table, progress, label="training a q-space model for this table"
    )
    trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    if cancel is not None:
        cancel.raise_if_cancelled()
    weights = run_dir / BEST_WEIGHTS_NAME
    if not weights.exists():
        raise ModelError(
            f"training a q-space model for gradient table {key} did not converge (no finite validation loss)"
        )
    entry = ModelEntry(
        id=model_id,
        title=config.model.title,
        kind="network",
        architecture=architecture,
        input="dwi",
        description="Trained automatically from simulated signals for a gradient table no shipped model covers.",
        arguments={"latent": 7},
        weights=str(weights),
        sha256=sha256_of(weights),
        size=weights.stat().st_size,
        gradient_table={"bvalues": table.bvalues.tolist(), "directions": table.directions.tolist()},
        training={
            "epochs": trainer.state.step,
            "samples": TABLE_MODEL_SAMPLES,
            "wall_time_seconds": round(trainer.state.wall_seconds),
        },
        metrics={"validation_mse": trainer.state.best_validation_mse},
    )
    register_user_model(entry)
    entry.user = True
    return entry
