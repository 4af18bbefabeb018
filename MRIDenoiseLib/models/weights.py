"""Weights files: safetensors only (never pickle), with the architecture recorded inside."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError
from ..nets import build_network
from .hashing import sha256_of

_SAFETENSORS_SUFFIX = ".safetensors"


def save_weights(path: str | Path, network: nn.Module, architecture: str, arguments: dict[str, Any]) -> str:
    """Write a network's weights atomically as safetensors; returns the file's sha256."""
    path = Path(path)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    metadata = {"architecture": architecture, "arguments": json.dumps(arguments, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        save_file(state, temporary, metadata=metadata)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return sha256_of(path)


def load_network(path: str | Path, architecture: str, arguments: dict[str, Any]) -> nn.Module:
    """Build ``architecture`` and fill it from a safetensors file; any other format is refused."""
    path = Path(path)
    if path.suffix != _SAFETENSORS_SUFFIX:
        raise ModelError(f"{path.name}: only .safetensors weights are loaded (never pickled files)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path.name} is not a readable safetensors file: {error}") from None
    network = build_network(architecture, arguments)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise ModelError(f"{path.name} does not match architecture {architecture!r}: {first_line}") from None
    return network.eval()
