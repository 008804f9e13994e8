"""Gradient-inversion attacks on what a Phalanx aggregator observes (issue 6).

`invert(method, model, observed_update, knowledge, config, generator)` runs ``dlg``, ``idlg``,
``ig``, ``gan``, ``diffusion`` or ``diffusion-ig``; `observe` builds the observed update for a
target (``update``, ``fedavg:S``, ``cluster-sum:K``, optionally defended); `metrics` scores the
result.

The names below are imported on first use, so that ``import phalanx.adversary.inversion.cli``
(which ``phalanx attack --help`` does) stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phalanx.adversary.inversion.attacks import invert as invert
    from phalanx.adversary.inversion.knowledge import AttackerKnowledge as AttackerKnowledge
    from phalanx.adversary.inversion.knowledge import InversionConfig as InversionConfig
    from phalanx.adversary.inversion.knowledge import Reconstruction as Reconstruction
    from phalanx.adversary.inversion.labels import recover_labels as recover_labels
    from phalanx.adversary.inversion.names import METHODS as METHODS
    from phalanx.adversary.inversion.priors import DiffusionPrior as DiffusionPrior
    from phalanx.adversary.inversion.priors import GanPrior as GanPrior
    from phalanx.adversary.inversion.priors import PriorSpec as PriorSpec
    from phalanx.adversary.inversion.priors import load_or_train_prior as load_or_train_prior
    from phalanx.adversary.inversion.targets import ObservedClusterSum as ObservedClusterSum
    from phalanx.adversary.inversion.targets import observe as observe
    from phalanx.adversary.inversion.targets import observed_cluster_sum as observed_cluster_sum
    from phalanx.adversary.inversion.targets import parse_defense as parse_defense
    from phalanx.adversary.inversion.targets import parse_target as parse_target

_EXPORTS = {
    "METHODS": "phalanx.adversary.inversion.names",
    "invert": "phalanx.adversary.inversion.attacks",
    "AttackerKnowledge": "phalanx.adversary.inversion.knowledge",
    "InversionConfig": "phalanx.adversary.inversion.knowledge",
    "Reconstruction": "phalanx.adversary.inversion.knowledge",
    "recover_labels": "phalanx.adversary.inversion.labels",
    "DiffusionPrior": "phalanx.adversary.inversion.priors",
    "GanPrior": "phalanx.adversary.inversion.priors",
    "PriorSpec": "phalanx.adversary.inversion.priors",
    "load_or_train_prior": "phalanx.adversary.inversion.priors",
    "ObservedClusterSum": "phalanx.adversary.inversion.targets",
    "observe": "phalanx.adversary.inversion.targets",
    "observed_cluster_sum": "phalanx.adversary.inversion.targets",
    "parse_defense": "phalanx.adversary.inversion.targets",
    "parse_target": "phalanx.adversary.inversion.targets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'phalanx.adversary.inversion' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
