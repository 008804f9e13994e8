"""Gradient-inversion attacks on what a Phalanx aggregator observes (issue 6).

`invert(method, model, observed_update, knowledge, config, generator)` runs ``dlg``, ``idlg``,
``ig``, ``gan``, ``diffusion`` or ``diffusion-ig``; `observe` builds the observed update for a
target (``update``, ``fedavg:S``, ``cluster-sum:K``, optionally defended); `metrics` scores the
result.
"""

from phalanx.adversary.inversion.attacks import METHODS as METHODS
from phalanx.adversary.inversion.attacks import invert as invert
from phalanx.adversary.inversion.knowledge import AttackerKnowledge as AttackerKnowledge
from phalanx.adversary.inversion.knowledge import InversionConfig as InversionConfig
from phalanx.adversary.inversion.knowledge import Reconstruction as Reconstruction
from phalanx.adversary.inversion.labels import recover_labels as recover_labels
from phalanx.adversary.inversion.priors import DiffusionPrior as DiffusionPrior
from phalanx.adversary.inversion.priors import GanPrior as GanPrior
from phalanx.adversary.inversion.priors import PriorSpec as PriorSpec
from phalanx.adversary.inversion.priors import load_or_train_prior as load_or_train_prior
from phalanx.adversary.inversion.targets import ObservedClusterSum as ObservedClusterSum
from phalanx.adversary.inversion.targets import observe as observe
from phalanx.adversary.inversion.targets import observed_cluster_sum as observed_cluster_sum
from phalanx.adversary.inversion.targets import parse_defense as parse_defense
from phalanx.adversary.inversion.targets import parse_target as parse_target
