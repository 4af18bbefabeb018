"""Training backend: validated configs, on-the-fly noisy/clean pairs, trainers and export.

``train(config)`` runs a whole config (stages included) and ``export(config)`` ships its weights;
see :mod:`.run`.
"""

from .run import export, train

__all__ = ["export", "train"]
