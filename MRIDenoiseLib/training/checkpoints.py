"""Run folders: file names, and checkpoints written atomically and read without unpickling."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
BEST_WEIGHTS_NAME = "best.safetensors"
LAST_WEIGHTS_NAME = "last.safetensors"
HISTORY_NAME = "history.jsonl"


def selected_weights_name(export_weights: str) -> str:
    """The run-folder file a config's ``export_weights`` ("best" or "last") selects."""
    return LAST_WEIGHTS_NAME if export_weights == "last" else BEST_WEIGHTS_NAME


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a run's state atomically (a crash mid-write never spoils the previous checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".part")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint this project wrote (tensors and plain values only: weights_only), or None."""
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def read_run_state(run_dir: Path) -> dict[str, Any]:
    """The loop's state (step, best step, wall time, hardware) saved in a run folder's checkpoint."""
    checkpoint = read_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} holds no training checkpoint; train first")
    return json.loads(checkpoint["state"])
