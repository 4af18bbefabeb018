"""PNG panels of one slice per volume, for the demo and the benchmarks (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import MRIDenoiseError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MRIDenoiseError("PNG output needs matplotlib: pip install matplotlib") from None
    return plt


def save_slice_panel(
    panels: list[tuple[str, np.ndarray]], path: str | Path, slice_index: int | None = None, signed: tuple[str, ...] = ()
) -> None:
    """One axial slice of each (title, volume) side by side; titles in ``signed`` use a diverging map.

    Magnitude panels share the grey scale of the first panel.
    """
    plt = _pyplot()
    first = panels[0][1]
    index = first.shape[0] // 2 if slice_index is None else slice_index
    high = float(np.percentile(first[index], 99.5)) or 1.0
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for axis, (title, volume) in zip(axes[0], panels, strict=True):
        image = volume[index]
        if title in signed:
            bound = float(np.percentile(np.abs(image), 99.5)) or 1.0
            axis.imshow(image, cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:
            axis.imshow(image, cmap="gray", vmin=0, vmax=high)
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
