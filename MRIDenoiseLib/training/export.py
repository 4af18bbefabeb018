"""Export a finished run: weights into the catalogue folder, a model card, a catalogue entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..models.catalog import CATALOG_NAME, write_json_atomic
from ..models.hashing import sha256_of
from ..models.paths import bundled_models_dir
from .checkpoints import HISTORY_NAME, read_run_state, selected_weights_name
from .config import ImageRunConfig, QSpaceRunConfig, ShellRunConfig, SupervisedConfig, TrainConfig

RUNS_FOLDER = "runs"
"""The folder of training runs, one sub-folder per model id (configs' stages are found beside each other there)."""


def default_run_dir(config: TrainConfig) -> Path:
    return Path(RUNS_FOLDER) / config.model.id


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / HISTORY_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def export_run(
    config: ImageRunConfig, run_dir: Path, models_dir: Path | None = None, first_stage: str | None = None
) -> Path:
    """Copy the run's selected weights to ``<models_dir>/<id>.safetensors`` and describe them.

    ``export_weights`` in the config selects them: the best validation checkpoint or the last.

    Writes the model card ``<id>.md`` and adds or updates the catalogue entry; benchmark
    figures are added to both by the benchmark scripts, not here. ``first_stage`` describes a
    run this one continued from (a distilled network's teacher), for the card.
    """
    models_dir = models_dir or bundled_models_dir()
    last = config.export_weights == "last"
    weights = run_dir / selected_weights_name(config.export_weights)
    if not weights.exists():
        raise FileNotFoundError(f"{weights} does not exist; train first")
    state = read_run_state(run_dir)
    history = read_history(run_dir)
    validation = [h for h in history if "psnr_foreground" in h]
    exported_step = state["step"] if last else state["best_step"]
    exported_record = next((h for h in validation if h["step"] == exported_step), {})
    training = {
        **run_summary(config, state, config.export_weights),
        "data": {"train": config.data.train, "validation": config.data.validation},
        "patch_size": config.data.patch_size,
        **(_transfer_summary(config) if isinstance(config, SupervisedConfig) else {}),
        **({"first_stage": first_stage} if first_stage else {}),
    }
    metrics = {
        "validation_during_training": {
            k: round(v, 4) for k, v in exported_record.items() if k not in ("step", "wall_seconds")
        },
        "protocol": "blind sigma, Rician noise, central slabs of the validation volumes (see training config)",
    }
    entry = publish(config, weights, models_dir, training, metrics, {"input": "scalar"})
    (models_dir / f"{config.model.id}.md").write_text(with_notes(model_card(entry, history), config))
    return models_dir / entry["weights"]


CARD_ROW_KEYS = ("transfer", "perceptual_loss", "self_supervised", "first_stage")


def _transfer_summary(config: SupervisedConfig) -> dict[str, str]:
    """How the run started (transfer), what its loss held beyond pixels (perceptual) and which real scans it
    learned without a clean image (self-supervised), in words."""
    summary = {}
    transfer = config.transfer
    if transfer is not None and transfer.config is not None:
        from .transfer import pretraining_config

        stage = pretraining_config(config)
        assert stage is not None  # transfer.config is set
        names = ", ".join(Path(name).name for name in stage.data.train)
        summary["transfer"] = (
            f"initialised from the pretraining stage `{stage.model.id}` ({transfer.config}: "
            f"{stage.optim.steps} steps on {names})"
        )
    elif transfer is not None and transfer.model is not None:
        summary["transfer"] = f"initialised from the shipped weights of `{transfer.model}`"
    elif transfer is not None:
        summary["transfer"] = f"encoder initialised from the ResNet-18 weights file {transfer.encoder_weights}"
    perceptual = config.perceptual
    if perceptual is not None:
        source = (
            "the encoder of the pretraining stage (trained here on MRI; no ImageNet weights used)"
            if perceptual.features == "transfer"
            else f"VGG-16 from {perceptual.features}"
        )
        summary["perceptual_loss"] = f"weight {perceptual.weight:g}, features of {source}"
    learned = config.self_supervised
    if learned is not None:
        names = ", ".join(Path(name).name for name in learned.scans)
        summary["self_supervised"] = (
            f"{learned.fraction:.0%} of the examples recorrupted patches (recorrupted-to-recorrupted, "
            f"{learned.recorruption:g}) of scans with no clean image: {names}"
        )
    return summary


def run_summary(
    config: ImageRunConfig | QSpaceRunConfig | ShellRunConfig, state: dict[str, Any], exported: str
) -> dict[str, Any]:
    """What every model card says about the run that made the weights (``exported``: "best" or "last")."""
    return {
        "config": _relative_config(config),
        "command": f"python -m MRIDenoiseLib train {_relative_config(config)} --export",
        "steps": state["step"],
        "best_step": state["best_step"],
        "exported": exported,
        "batch_size": config.optim.batch_size,
        "wall_time_seconds": round(state["wall_seconds"]),
        "hardware": state.get("hardware", ""),
        "seed": config.seed,
    }


def publish(
    config: ImageRunConfig | QSpaceRunConfig | ShellRunConfig,
    weights: Path,
    models_dir: Path,
    training: dict[str, Any],
    metrics: dict[str, Any],
    fields: dict[str, Any],
) -> dict[str, Any]:
    """Copy weights to ``<models_dir>/<id>.safetensors`` and add or update the catalogue entry."""
    model = config.model
    weights_name = f"{model.id}.safetensors"
    target = models_dir / weights_name
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(weights, partial)
    partial.replace(target)
    catalog_path = models_dir / CATALOG_NAME
    catalog = json.loads(catalog_path.read_text()) if catalog_path.exists() else {"models": []}
    previous: dict[str, Any] = next((m for m in catalog["models"] if m["id"] == model.id), {})
    entry = {
        **previous,
        "id": model.id,
        "title": model.title,
        "description": model.description,
        "kind": "network",
        "architecture": model.architecture,
        "arguments": model.arguments,
        "planes": model.planes,
        "weights": weights_name,
        "sha256": sha256_of(target),
        "size": target.stat().st_size,
        "urls": previous.get("urls", []),
        "license": previous.get("license", "Apache-2.0 (weights); trained on data listed in the model card"),
        "citation": model.citation or previous.get("citation", ""),
        "training": training,
        "metrics": {**previous.get("metrics", {}), **metrics},
        "default": previous.get("default", False),
        **fields,
    }
    ids = [m["id"] for m in catalog["models"]]
    if model.id in ids:  # re-exported: the entry keeps its place, so the catalogue's diff is the change alone
        catalog["models"][ids.index(model.id)] = entry
    else:
        catalog["models"].append(entry)
    write_json_atomic(catalog_path, catalog)
    return entry


def with_notes(card: str, config: ImageRunConfig | QSpaceRunConfig | ShellRunConfig) -> str:
    """A model card with the config's ``model.notes`` appended as its Notes section."""
    if not config.model.notes:
        return card
    return card.rstrip() + "\n\n" + "\n".join(["## Notes", "", *(f"{note}\n" for note in config.model.notes)])


def card_header(entry: dict[str, Any]) -> list[str]:
    """Title, description and the first rows of a model card's table."""
    return [
        f"# {entry['title']} (`{entry['id']}`)",
        "",
        entry["description"],
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{entry['architecture']}` {json.dumps(entry['arguments'])} |",
    ]


def model_card(entry: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """Markdown model card from a catalogue entry and the run's validation history."""
    training = entry["training"]
    lines = [
        *card_header(entry),
        f"| weights | `{entry['weights']}`, {entry['size']} bytes |",
        f"| sha256 | `{entry['sha256']}` |",
        f"| training data | {', '.join(Path(p).name for p in training['data']['train'])} |",
        f"| validation data (never trained on) | {', '.join(Path(p).name for p in training['data']['validation'])} |",
        f"| steps | {training['steps']} ({_exported_weights(training)}), "
        f"batch {training['batch_size']} patches of {training['patch_size']} px |",
        f"| wall time | {training['wall_time_seconds'] / 60:.0f} min |",
        f"| hardware | {training['hardware']} |",
        *(f"| {key.replace('_', ' ')} | {training[key]} |" for key in CARD_ROW_KEYS if key in training),
        f"| reproduce | `{training['command']}` |",
        "",
        "## Validation during training",
        "",
        "Blind (sigma estimated), Rician noise, central slabs of the validation volumes; foreground PSNR in dB.",
        "",
        "| step | PSNR | SSIM | " + " | ".join(_column_title(k) for k in _level_keys(history)) + " |",
        "|---|---|---|" + "---|" * len(_level_keys(history)),
    ]
    for record in [h for h in history if "psnr_foreground" in h]:
        levels = " | ".join(f"{record.get(k, float('nan')):.2f}" for k in _level_keys(history))
        lines.append(
            f"| {record['step']} | {record['psnr_foreground']:.2f} | {record['ssim_foreground']:.4f} | {levels} |"
        )
    lines += [
        "",
        "Benchmark figures (EVALUATION.md protocol, beside the peers) are in `benchmarks/` and the README.",
        "",
    ]
    return "\n".join(lines)


def _exported_weights(training: dict[str, Any]) -> str:
    if training.get("exported") == "last":
        return f"final weights exported; best validation was at step {training['best_step']}"
    return f"best validation at step {training['best_step']}"


def _column_title(key: str) -> str:
    """A validation column's title: "5 %" for a noise level, the name for a noise model or the tone curves."""
    part = key.split("@")[1]
    return f"{part} %" if part.replace(".", "", 1).isdigit() else part


def _level_keys(history: list[dict[str, Any]]) -> list[str]:
    for record in history:
        keys = [k for k in record if k.startswith("psnr_foreground@")]
        if keys:
            return keys
    return []


def _relative_config(config: ImageRunConfig | QSpaceRunConfig | ShellRunConfig) -> str:
    source = config.source
    if source is None:
        return "CONFIG"
    try:
        return str(source.relative_to(Path.cwd()))
    except ValueError:
        return f"configs/{source.name}"
