"""The contract every image (2.5-D) network keeps, so inference and training need no guessing."""

from __future__ import annotations

from torch import nn


class SliceNetwork(nn.Module):
    """Input channels: ``2 * context + 1`` neighbouring slices (the centre one in the middle), then, when
    ``noise_level_input``, a map of the noise level; output: the denoised centre slice (one channel).

    Subclasses set ``context`` (per instance or class) and ``noise_level_input``; the defaults are a
    single slice with a noise map.
    """

    context: int = 0
    noise_level_input: bool = True

    @property
    def input_slices(self) -> int:
        """How many neighbouring slices one input holds: ``2 * context + 1``."""
        return 2 * self.context + 1
